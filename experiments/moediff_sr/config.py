"""MoEDiff-SR on the MNI152 template: bicubic vs EDSR-lite vs single-expert diffusion vs MoE.

    python experiments/moediff_sr/main.py --config=experiments/moediff_sr/config.py:small \
        --workdir=/tmp/moediff_sr
"""

import ml_collections

PAPER = "MoEDiff-SR (arXiv 2504.07308)"
ORDER = 60


def get_config(arg=None):
    preset = arg or "small"
    if preset not in ("smoke", "small", "full"):
        raise ValueError(f"preset: expected smoke, small or full, got {preset!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0
    # data: axial MNI152 slices at 1 mm, held-out slabs for test
    c.crop = (144, 168)
    c.test_slabs = [(70, 76), (92, 98)]
    c.slab_gap = 3
    c.min_brain = 0.3
    c.train_stride = 2
    c.test_stride = 2
    c.pool_repeats = 2
    c.elastic_px = 2.0
    c.train_scales = (2, 4)
    c.train_conditions = ("clean", "noisy")
    c.noise_sigma = 0.02
    c.bias_strength = 0.15
    c.eval_scales = (2, 4)
    c.eval_conditions = ("clean", "noisy")
    # models (MoE: 3 experts; the single expert is widened to the same parameter count)
    c.num_experts = 3
    c.expert_width = 12
    c.expert_depth = 3
    c.feature_dim = 24
    c.patch_sizes = (4, 8, 16)
    c.transformer_depth = 1
    c.emb_dim = 16
    c.parameterisation = "v"
    c.schedule = "cosine"
    c.residual_scale = 0.1
    c.task_weight = 0.1
    c.gate_weight = 0.01
    c.diversity_weight = 0.01
    # training
    c.train_steps = 300
    c.batch_size = 16
    c.patch = 32
    c.learning_rate = 2e-3
    c.log_every = 50
    # sampling / evaluation
    c.sampler = "ddim"
    c.sample_steps = 8
    c.sample_seeds = 2
    c.dipy_eval = True
    if preset == "smoke":
        c.crop = (96, 96)
        c.train_scales = (4,)
        c.train_conditions = ("noisy",)
        c.train_steps = 30
        c.batch_size = 8
        c.pool_repeats = 1
        c.test_stride = 6
        c.train_stride = 6
        c.eval_scales = (4,)
        c.eval_conditions = ("noisy",)
        c.dipy_eval = False
        c.sample_steps = 2
        c.sample_seeds = 1
        c.log_every = 10
    elif preset == "full":
        c.crop = (192, 216)
        c.train_stride = 1
        c.test_stride = 1
        c.pool_repeats = 8
        c.expert_width = 48
        c.expert_depth = 6
        c.feature_dim = 96
        c.transformer_depth = 4
        c.emb_dim = 64
        c.train_steps = 50_000
        c.batch_size = 32
        c.patch = 64
        c.learning_rate = 2e-4
        c.sample_steps = 50
        c.sample_seeds = 5
        c.log_every = 500
    return c
