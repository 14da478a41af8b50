"""1.5T -> 7T-like MRI SR: guidance-map diffusion teacher vs progressively distilled student.

    python experiments/sr_distill/main.py --config=experiments/sr_distill/config.py:small \
        --workdir=/tmp/sr_distill
"""

import importlib.util
import pathlib

import ml_collections

PAPER = "Distillation-driven multi-scale MRI SR, 1.5T -> 7T-like (arXiv 2501.18736)"
ORDER = 61


def moediff_config(preset):
    """The `moediff_sr` experiment's config of the same preset (its `config.py`, loaded by path:
    both experiments name their config `config`). sr_distill uses its model, loss, optimiser,
    batch and sampler fields; its data fields (crop, slabs, degradation) are not used: the
    MoEDiff-SR models train on sr_distill's pool like the teacher."""
    path = pathlib.Path(__file__).resolve().parents[1] / "moediff_sr" / "config.py"
    spec = importlib.util.spec_from_file_location("moediff_sr_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


def get_config(arg=None):
    preset = arg or "small"
    if preset not in ("smoke", "small", "full"):
        raise ValueError(f"preset: expected smoke, small or full, got {preset!r}")
    c = ml_collections.ConfigDict()
    c.preset = preset
    c.seed = 0
    # extra XLA flags set before the first computation ("" = none); smoke is dominated by
    # compilation, so it compiles with the backend optimisation level 0
    c.xla_flags = ""
    # data: axial MNI152 slices at 1 mm, held-out slabs for test, dipy's real slice as OOD test
    c.crop = (64, 64)
    c.test_slabs = [(70, 76), (92, 98)]
    # validation slab (between the test slabs, held out from training with the same gap, as in
    # moediff_sr): every setting is chosen on it; the test slabs give the final numbers only
    c.val_slabs = [(82, 88)]
    c.val_stride = 1
    c.slab_gap = 3
    c.min_brain = 0.3
    c.train_stride = 2
    c.test_stride = 3
    c.pool_repeats = 2
    # 1.5T-like acquisition (field-strength simulation) and scales
    c.noise_sigma = 0.02
    c.bias_strength = 0.1
    c.warp_strength = 0.03
    c.contrast_reduction = 0.3
    c.train_scales = (2.0, 3.0, 4.0)
    c.eval_scales = (2.0, 3.0, 4.0, 2.5)  # 2.5: never seen in training
    c.residual_scale = 0.1
    c.schedule = "cosine"
    # teacher (SR3-style guided UNet) and student (small multi-scale UNet)
    c.teacher_widths = (12, 24, 48)
    c.teacher_emb = 32
    c.student_widths = (6, 12, 24)
    c.student_emb = 16
    c.teacher_steps = 8  # DDIM steps of the teacher
    # training
    c.batch_size = 12
    c.patch = 32
    c.teacher_train_steps = 250
    c.teacher_lr = 2e-3
    # a fraction of each teacher batch on the noise levels of its DDIM grid (the levels the
    # sampler and the distillation visit); None: t ~ U(0, 1) only
    c.teacher_levels = 8
    c.teacher_level_fraction = 0.5
    # progressive distillation: stage 0 at teacher_steps (size), then halve per stage
    c.stages = 4  # 8 -> 4 -> 2 -> 1 steps
    c.stage_steps = 48
    c.student_lr = 2e-3
    c.curriculum_levels = 10
    c.curriculum_sigma_max = 1.5
    c.feature_layers = ("enc1", "mid", "dec1")
    c.feature_weight = 0.1
    # the MoEDiff-SR issue's models as that experiment builds, trains and samples them: its
    # config of the same preset (`small`: shared 3-block trunk of width 26, log high-pass gate
    # input over 16 px, linear gate upsampling, scaled input, zero-init FiLM, identical expert
    # init, gated losses with the region-informed gate target, trained at t = 1 only, 150 steps
    # of batch 16, DDIM 1 step), on sr_distill's pool and conditioning
    c.baselines = True
    c.moe = moediff_config(preset)
    # evaluation
    c.teacher_one_step = True  # also the teacher's 1-step DDIM (its x0 estimate at t = 1)
    c.dipy_eval = True
    c.stage_eval = True  # evaluate every stage's student (where quality breaks)
    c.time_repeats = 3
    c.log_every = 25
    c.ckpt_every = 0  # 0: checkpoint at the end of each loop only
    if preset == "smoke":
        c.xla_flags = "--xla_backend_optimization_level=0"
        c.crop = (48, 48)
        c.train_stride = 6
        c.test_stride = 6
        c.pool_repeats = 1
        c.teacher_widths = (8, 16)  # two levels: less to compile
        c.teacher_emb = 16
        c.student_widths = (4, 8)
        c.feature_layers = ("enc1", "dec0")
        c.teacher_steps = 4
        c.batch_size = 8
        c.teacher_train_steps = 20
        c.teacher_levels = 4
        c.stages = 2
        c.stage_steps = 10
        c.stage_eval = False
        c.train_scales = (2.0, 4.0)
        c.eval_scales = (4.0, 2.5)
        c.time_repeats = 1
        c.log_every = 10
        c.teacher_one_step = False
        c.val_stride = 3  # 2 slices
        c.moe.train_steps = 10  # moediff_sr smoke: 20; halved to keep this smoke under a minute
    elif preset == "full":
        c.crop = (192, 192)
        c.train_stride = 1
        c.test_stride = 1
        c.pool_repeats = 8
        c.teacher_widths = (64, 128, 256)
        c.teacher_emb = 128
        c.student_widths = (16, 32, 64)
        c.student_emb = 64
        c.teacher_steps = 64
        c.teacher_levels = 64
        c.batch_size = 32
        c.patch = 64
        c.teacher_train_steps = 100_000
        c.teacher_lr = 2e-4
        c.stages = 7  # 64 -> 1 steps
        c.stage_steps = 10_000
        c.student_lr = 2e-4
        c.time_repeats = 5
        c.log_every = 500
        c.ckpt_every = 2000
    return c
