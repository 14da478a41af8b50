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
    # compile without LLVM optimisation (XLA_FLAGS, before the CPU backend starts): smoke only,
    # where compiling ~20 programs costs more than running them
    c.fast_compile = False
    # PRNG of the zoo's initialisers (jax.random.key impl); smoke: XLA's RngBitGenerator,
    # whose one op per parameter compiles faster than threefry's unrolled hash (-1 s CPU)
    c.init_prng = "threefry2x32"
    # models (digits zoo)
    c.width, c.depth, c.heads = 64, 3, 4
    c.num_timesteps, c.sample_steps, c.guidance = 100, 50, 2.0
    c.diffusion_steps, c.aux_steps, c.batch_size = 450, 220, 128  # session 4: 600, 300
    c.latent_width, c.latent_depth, c.latent_steps = 32, 2, 200  # latent DiT over VAE latents
    c.lora_names, c.lora_rank, c.lora_steps = ("bold",), 4, 80  # LoRA style adapters
    c.quality_samples = 80  # session 5: 100
    # serving
    c.num_workers, c.max_batch, c.queue_limit = 6, 16, 32  # monolithic: a replica per workflow
    c.buckets = (1, 4, 16)
    c.slo_scale = 5.0  # SLO = slo_scale x standalone latency of the workflow
    # profile-driven batching (ds.BatchPolicy) in the real server and the simulator: a queue
    # whose full batch costs <= batch_cheap_ratio x its smallest waits for fuller batches,
    # each request spending at most batch_delay_fraction of its SLO slack, split over the
    # queues it passes; False: session 4's bucket-filling dispatch
    c.batching = True
    c.batch_delay_fraction, c.batch_cheap_ratio = 0.25, 2.0
    # load
    # x estimated capacity (from standalone latencies, which a loaded machine inflates: the
    # sweep goes past 1.0 so that it saturates; two points below 50% end a system's sweep)
    c.rate_fractions = (0.3, 0.6, 0.85, 1.2)  # session 5: 0.25, 0.5, 0.7, 1.0, 1.4, 2.0
    c.cvs = (1.0, 2.0, 4.0)  # session 5: also 8.0 (both modes always far below 90%)
    c.cv_rate_fraction = 0.7
    c.latent_share = 0.15  # trace rows asking for the latent base model
    # True: also serve both modes with inline_below_s=0 (rate sweep; +~40 s CPU, off to keep
    # the main job near its budget; HISTORY.md, "Session 3", records a run with it on)
    c.inline_off = False
    c.duration_s = 1.0
    c.repeats = 1
    c.sim_workers = 32  # cluster-scale simulation
    c.sim_duration_s = 1.5  # session 5: 2.0
    # device memory in multiples of the largest workflow's bytes (an assumption, so swept;
    # 0 = every workflow replica fits); the claim quotes the preregistered sim_claim_memory
    c.sim_memory = (1.0, 2.0, 0.0)  # full: also 1.5 and 3.0 (session 4 ran them in small)
    c.sim_claim_memory = 2.0
    # copies of each workflow sharing its models (production: many scene/LoRA/ControlNet
    # pipelines over a few base models), simulated at sim_claim_memory; an assumption, swept
    c.sim_variants = (1, 4, 16)
    c.sim_phase_s, c.sim_skew = 0.5, 1.2  # popularity reshuffled every phase, Zipf skew
    c.sim_rate_range = (0.05, 3.0)  # x capacity, searched by geometric bisection
    c.sim_cv_range = (0.5, 16.0)
    c.sim_cv_rate_fraction = 0.25  # the CV sweep's rate, x capacity
    c.sim_bisect = 5
    # the same simulated sweep calibrated on per-node timings measured on a GPU (written by
    # packages/diffusion_serve_jax/benchmarks/profile_nodes.py; relative to this folder or
    # absolute; skipped when the file is absent)
    c.gpu_profile = "profiles/h200.json"
    # also run the claim point with session 4's bucket-filling dispatch (the batching policy's
    # "before"; in full only since session 6; HISTORY.md keeps session 5's numbers)
    c.sim_before = False
    # simulated micro-serving vs the LoRA hot-swapping monolith (lego_hotswap.py): variants of
    # each workflow (k LoRAs of its DiT) x device counts, CPU- and H200-calibrated; small runs
    # 8 devices (~4 s CPU; the device sweep 8/32/128 is `python lego_hotswap.py --workdir=..`
    # on a finished run, and in full), rate steps of 1.29x (4 bisection steps over 0.05-3x)
    c.hs_variants, c.hs_devices, c.hs_bisect, c.hs_duration_s = (1, 4, 16, 64), (8,), 4, 1.0
    # the paper's regime on the real server (lego_variants.py): `real_variants` copies of each
    # workflow sharing its models, every worker holding the bytes of all distinct models (a
    # micro worker holds one instance of each; a monolithic worker a few whole workflow
    # replicas, loaded on a miss: "orbax" restores from disk, "host" device_puts a host-memory
    # copy), shifting Zipf mix; max rate (x capacity range) and max CV found by geometric
    # bisection on real runs
    c.real_variants, c.real_var_loads = (4,), ("orbax", "host")
    c.real_var_workers, c.real_var_phase_s, c.real_var_duration_s = 6, 0.3, 1.2
    c.real_var_min_requests = 40  # a low-rate point runs longer (its CPU cost is its requests)
    c.real_var_rate_range, c.real_var_bisect = (0.25, 1.25), 3  # rate steps of 1.22x
    c.real_var_cv_range, c.real_var_cv_bisect = (0.5, 8.0), 2  # CV steps of 2x
    if preset == "smoke":
        c.fast_compile = True
        c.init_prng = "unsafe_rbg"
        c.width, c.depth = 32, 1  # one DiT block: the block stack is unrolled in every compile
        c.sample_steps = 10
        c.diffusion_steps, c.aux_steps, c.batch_size = 40, 40, 64
        c.latent_width, c.latent_depth, c.latent_steps = 16, 1, 0  # VAE trains; latent DiT not
        c.lora_steps = 0  # smoke serves a fresh (identity) adapter: no LoRA trainer compile
        c.quality_samples = 30
        c.buckets = (8,)  # one compiled shape per model
        c.max_batch = 8
        c.rate_fractions = (0.1, 0.4)
        c.cvs = (4.0,)
        c.duration_s = 0.4
        c.sim_workers = 8
        c.sim_duration_s = 0.3
        c.sim_memory = (1.0, 2.0, 0.0)
        c.sim_variants = (1, 4)
        c.sim_phase_s = 0.2
        c.sim_bisect = 2
        c.real_var_bisect, c.real_var_cv_bisect, c.real_var_duration_s = 0, 0, 0.3
        c.real_var_phase_s, c.real_var_min_requests = 0.15, 6
        c.hs_variants, c.hs_devices, c.hs_bisect, c.hs_duration_s = (1, 4), (8,), 1, 0.3
    elif preset == "full":
        c.diffusion_steps, c.aux_steps = 3000, 600
        c.quality_samples = 1000
        c.buckets = (1, 2, 4, 8, 16, 32)
        c.max_batch = 32
        c.num_workers = 8
        c.latent_steps, c.lora_steps = 2000, 600
        c.duration_s = 20.0
        c.repeats = 3
        c.rate_fractions = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5)
        c.cvs = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
        c.sim_workers = 256
        c.sim_memory = (1.0, 1.5, 2.0, 3.0, 0.0)
        c.sim_bisect = 7
        c.sim_before = True
        c.real_variants, c.real_var_bisect, c.real_var_cv_bisect = (1, 4, 16), 5, 4
        c.real_var_workers, c.real_var_duration_s = 8, 10.0
        c.sim_duration_s = 2.0
        c.hs_devices, c.hs_bisect, c.hs_duration_s = (8, 32, 128, 256), 5, 2.0
    return c
