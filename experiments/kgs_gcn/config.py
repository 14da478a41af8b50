"""KGS-GCN vs ST-GCN and CTR-GCN(-lite) on synthetic NTU-25 cross-subject / cross-view splits.

    python experiments/kgs_gcn/main.py \
        --config=experiments/kgs_gcn/config.py:small --workdir=/tmp/kgs_gcn
"""

import ml_collections

PAPER = "KGS-GCN (arXiv 2603.16943)"
ORDER = 70


def get_config(arg=None):
    preset = arg or "small"
    if preset not in ("smoke", "small", "full"):
        raise ValueError(f"preset: expected smoke, small or full, got {preset!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0
    # data: every (class, subject, view) combination `repeats` times
    c.num_subjects = {"smoke": 6, "small": 10, "full": 40}[preset]
    c.repeats = {"smoke": 1, "small": 1, "full": 4}[preset]
    c.num_frames = {"smoke": 12, "small": 16, "full": 64}[preset]
    c.num_persons = {"smoke": 1, "small": 1, "full": 2}[preset]
    c.second_person_prob = 0.0 if preset != "full" else 0.3
    # models
    full_channels = (64, 64, 64, 128, 128, 128, 192, 192, 192)  # ~1.4M parameters, like the paper
    c.channels = {"smoke": (16,), "small": (16, 32), "full": full_channels}[preset]
    c.grid = {"smoke": 8, "small": 8, "full": 32}[preset]
    c.separable = True  # separable (product-of-marginals) splat renderer; False: exact 2-D
    # main comparison on X-Sub (with robustness curves); st_gcn_wide is ST-GCN widened to
    # KGS-GCN's parameter count. smoke keeps the one baseline the claims need.
    c.models = {
        "smoke": ("kgs_gcn", "st_gcn"),
        "small": ("kgs_gcn", "st_gcn", "st_gcn_wide", "ctr_gcn"),
        "full": ("kgs_gcn", "st_gcn", "st_gcn_wide", "ctr_gcn"),
    }[preset]
    # X-View runs (a subset on 2 CPU cores: CTR-GCN-lite is the slowest model per step)
    c.xview_models = {
        "smoke": ("kgs_gcn", "st_gcn"),
        "small": ("kgs_gcn", "st_gcn"),
        "full": ("kgs_gcn", "st_gcn", "st_gcn_wide", "ctr_gcn"),
    }[preset]
    # ablations: X-Sub, every seed, with robustness
    c.ablations = {
        "smoke": (),
        "small": ("kgs_no_splat", "kgs_no_prob", "kgs_graph_only"),
        "full": (
            "kgs_no_splat",
            "kgs_no_prob",
            "kgs_graph_only",
            "kgs_isotropic",
            "kgs_physical",
            "kgs_concat",
            "kgs_exact_render",
        ),
    }[preset]
    # training
    c.seeds = {"smoke": 1, "small": 3, "full": 5}[preset]
    c.steps = {"smoke": 60, "small": 80, "full": 20000}[preset]
    c.batch_size = {"smoke": 16, "small": 32, "full": 64}[preset]
    c.learning_rate = 3e-3
    c.weight_decay = 1e-4
    # robustness (evaluation of the X-Sub models on degraded test sets) and ablations
    c.sparsity_levels = (0.0, 0.5, 0.75)
    c.dropout_levels = (0.0, 0.2, 0.4)
    c.noise_levels = (0.01, 0.05)
    return c
