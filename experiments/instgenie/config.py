"""InstGenIE: mask-aware cached editing with step-level batching vs full recomputation.

    python experiments/instgenie/main.py \
        --config=experiments/instgenie/config.py:small --workdir=/tmp/instgenie
"""

import ml_collections

PAPER = "InstGenIE (arXiv 2505.20600)"
ORDER = 51


def get_config(arg=None):
    preset = arg or "small"
    if preset not in ("smoke", "small", "full"):
        raise ValueError(f"preset: expected smoke, small or full, got {preset!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0
    c.width, c.depth, c.heads = 64, 3, 4
    c.num_timesteps, c.steps = 100, 20
    c.train_steps, c.batch_size = 400, 128
    c.num_templates = 8  # digit templates (the first scikit-learn digits)
    # real-image templates: scikit-image samples bundled in its wheel, registered as uploads
    c.image_templates = ("camera", "coins", "moon", "astronaut")
    c.mask_tokens = (1, 2, 4, 8)  # heterogeneous masks: 1/16 .. 1/2 of the image
    c.max_batch = 8
    c.batch_buckets = (1, 2, 4, 8)
    c.token_buckets = (2, 4, 8, 16)
    c.rate_fractions = (0.5, 1.0, 1.5, 2.5)  # x full-recompute static capacity
    c.duration_s = 2.5
    c.quality_edits = 24
    c.repeats = 1
    c.num_workers = 2
    if preset == "smoke":
        c.width, c.depth = 32, 2
        c.steps = 10
        c.train_steps, c.batch_size = 30, 64
        c.num_templates = 4
        c.image_templates = ("camera", "coins")
        c.batch_buckets = (2, 8)
        c.token_buckets = (4, 16)
        c.rate_fractions = (0.5, 1.5)
        c.duration_s = 0.5
        c.quality_edits = 4
    elif preset == "full":
        c.train_steps = 3000
        c.steps = 50
        c.duration_s = 20.0
        c.repeats = 3
        c.rate_fractions = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
        c.quality_edits = 200
    return c
