"""LegoDiffusion: micro-serving diffusion workflows vs a monolithic baseline, over real HTTP.

    python experiments/lego_diffusion/main.py \
        --config=experiments/lego_diffusion/config.py:small --workdir=/tmp/lego_diffusion
"""

import ml_collections

PAPER = "LegoDiffusion (arXiv 2604.08123)"
ORDER = 50


def get_config(arg=None):
    preset = arg or "small"
    if preset not in ("smoke", "small", "full"):
        raise ValueError(f"preset: expected smoke, small or full, got {preset!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0
    # models (digits zoo)
    c.width, c.depth, c.heads = 64, 3, 4
    c.num_timesteps, c.sample_steps, c.guidance = 100, 50, 2.0
    c.diffusion_steps, c.aux_steps, c.batch_size = 600, 300, 128
    c.quality_samples = 200
    # serving
    c.num_workers, c.max_batch, c.queue_limit = 4, 16, 32
    c.buckets = (1, 4, 16)
    c.slo_scale = 5.0  # SLO = slo_scale x standalone latency of the workflow
    # load
    c.rate_fractions = (0.05, 0.1, 0.17, 0.25, 0.35, 0.5, 0.7, 1.0)  # x estimated capacity
    c.cvs = (1.0, 2.0, 4.0, 6.0, 8.0)
    c.cv_rate_fraction = 0.7
    c.duration_s = 2.5
    c.repeats = 1
    c.sim_workers = 64  # cluster-scale simulation
    c.sim_duration_s = 4.0
    c.sim_rate_fractions = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0, 2.5, 3.0, 4.0)
    c.sim_cvs = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
    if preset == "smoke":
        c.width, c.depth = 32, 2
        c.sample_steps = 10
        c.diffusion_steps, c.aux_steps, c.batch_size = 40, 40, 64
        c.quality_samples = 30
        c.buckets = (1, 8)
        c.max_batch = 8
        c.rate_fractions = (0.05, 0.15, 0.4)
        c.cvs = (1.0, 4.0)
        c.duration_s = 0.6
        c.sim_workers = 8
        c.sim_duration_s = 0.5
        c.sim_rate_fractions = (0.2, 0.5, 1.0, 2.0, 4.0)
        c.sim_cvs = (1.0, 4.0, 16.0)
    elif preset == "full":
        c.diffusion_steps, c.aux_steps = 3000, 600
        c.quality_samples = 1000
        c.buckets = (1, 2, 4, 8, 16, 32)
        c.max_batch = 32
        c.num_workers = 8
        c.duration_s = 20.0
        c.repeats = 3
        c.rate_fractions = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5)
        c.cvs = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
        c.sim_workers = 256
    return c
