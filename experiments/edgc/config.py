"""EDGC experiment: uncompressed vs static PowerSGD vs top-k vs EDGC on a GPT-2-style model.

    python experiments/edgc/main.py --config=experiments/edgc/config.py:small --workdir=/tmp/edgc

Presets: `smoke` (CI, seconds), `small` (the CPU-scale reproduction), `full` (paper-scale-ish,
for a GPU host). Data parallel over 8 simulated devices; parameters are split into pipeline stages
(embeddings + first blocks / last blocks + head) and EDGC picks one rank per stage. `small` and
`full` also train a real dp x pp GPipe pipeline (`pipe_*`) and run the same data-parallel step
across `mp_processes` real processes (`mp_*`, jax.distributed + gloo over loopback, see
edgc_multiprocess.py).
"""

import ml_collections

PAPER = "EDGC (arXiv 2511.10333)"
ORDER = 30


def get_config(arg=None):
    preset = arg or "small"
    if preset not in ("smoke", "small", "full"):
        raise ValueError(f"preset: expected smoke, small or full, got {preset!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.devices = 8
    c.stages = 2
    c.seq = 48
    c.dim, c.heads, c.layers = 64, 4, 3
    c.batch_per_device = 2
    c.steps = 100
    c.eval_every = 25
    c.eval_batches = 4
    c.learning_rate = 2e-3
    c.seeds = (0, 1)
    c.methods = ("none", "powersgd_r1", "powersgd_r2", "powersgd_r4", "powersgd_r8", "topk", "edgc")
    c.max_rank = 8
    c.topk_ratio = 0.01
    c.start_fraction = 0.1  # compression starts after 10% of the steps (torch hook default)
    # EDGC
    c.init_rank = 4
    c.min_rank = 2  # rank floor: the controller may halve init_rank once, never more (see README)
    c.window = 10
    c.period = 2  # entropy every 2 steps (alpha = 1/2)
    c.fraction = 0.05  # on 5% of the gradient (beta)
    c.entropy_block = 1  # single entries: at 0.15 M parameters a 5% sample is a few runs of 256
    c.bins = 256
    c.hysteresis_bits = 0.02
    c.loss_tolerance = 0.03  # EDGC must stay within 3% of the uncompressed validation loss
    c.ckpt_every = 100
    # Pipeline mode: dp x pp mesh, GPipe over "pp", EDGC grads per stage + low-rank links
    c.pipe_methods = ("none", "edgc")
    c.pipe_seeds = (0, 1)
    c.pp, c.micro, c.pipe_layers = 2, 2, 2  # 4 dp x 2 pp; one block per stage
    c.pipe_batch = 4  # sequences per data-parallel replica (2 micro-batches of 2)
    c.link_init_rank, c.link_min_rank = 16, 4  # of 64 features
    # Multi-process mode: the same data-parallel GPT step across real processes (gloo, loopback)
    c.mp_processes = 2
    c.mp_methods = ("none", "edgc")
    c.mp_steps = 12
    c.mp_reps = 5  # timed repeats of the step with / without the collective
    if preset == "small":  # sized for <= 150 s on 2 CPU cores
        c.seq = 32
        c.steps, c.eval_every, c.window = 60, 20, 6
        c.ckpt_every = 60
    if preset == "smoke":
        c.dim, c.heads, c.layers, c.seq = 32, 2, 2, 32
        c.batch_per_device = 2
        c.steps, c.eval_every, c.eval_batches = 24, 12, 2
        c.seeds = (0,)
        c.methods = ("none", "edgc")
        c.window, c.period, c.fraction = 6, 1, 0.25
        c.init_rank, c.max_rank, c.min_rank = 2, 4, 1
        c.ckpt_every = 24
        c.pipe_methods = ()
        c.mp_methods = ()
    elif preset == "full":
        c.dim, c.heads, c.layers, c.seq = 256, 8, 6, 128
        c.batch_per_device = 8
        c.steps, c.eval_every, c.eval_batches = 3000, 100, 32
        c.ckpt_every = 500
        c.seeds = (0, 1, 2)
        c.window = 100
        c.pipe_seeds = (0, 1, 2)
        c.pp, c.pipe_layers, c.micro, c.pipe_batch = 2, 6, 4, 16
        c.link_init_rank, c.link_min_rank = 64, 8
    return c
