"""Guided diffusion teacher -> progressively distilled multi-scale student, side by side.

1. Simulate 1.5T-like acquisitions of MNI152 training slabs at x2, x3, x4 (bias field, gradient
   nonlinearity warp, contrast loss, Rician noise) with the correction maps as guidance.
2. Train the teacher (SR3-style guided UNet, residual diffusion, v-prediction, L1; part of
   each batch on the noise levels of its DDIM grid).
3. Distil stage by stage into a ~4x cheaper student: stage 0 at the teacher's steps, then each
   stage halves the steps; feature matching at teacher layers + a sharpening target curriculum.
4. Train the MoEDiff-SR issue's models (MoEDiff-SR, single expert) on the same pool with the
   `moediff_sr` experiment's configuration and functions (`sr_distill_baselines`).
5. Evaluate bicubic, bicubic + correction maps, the teacher (its steps and 1 step), every
   student stage and the MoEDiff-SR models at x2, x3, x4 and the unseen x2.5 on the
   validation slab (where settings are chosen), the held-out test slabs and dipy's real T1
   slice (final numbers); FLOPs, params, sampling time (wall and CPU).
"""

import os
import pathlib

import distill_lib as lib
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import sr_distill_baselines as bl
from absl import logging
from flax import nnx

import mri_sr_jax as msr
import xplib

PAPER = "Distillation-driven multi-scale MRI SR, 1.5T -> 7T-like (arXiv 2501.18736)"
METRICS = ("psnr", "ssim", "hfen")
TEACHER_1 = "teacher (1 step)"
NAMES = ("bicubic", "bicubic+maps", "teacher", TEACHER_1, "student", *bl.NAMES)


def train_teacher(tg, tp, sample, config, schedule, workdir, *, key):
    def loss(m, b, k):
        return msr.diffusion_loss(
            m,
            b,
            k,
            schedule=schedule,
            parameterisation="v",
            num_levels=config.get("teacher_levels"),
            level_fraction=config.get("teacher_level_fraction", 1.0),
        )

    trainer = msr.make_trainer(tg, loss, lib.adam(config.teacher_lr, config.teacher_train_steps))

    def inputs(k):
        k1, k2 = jax.random.split(k)
        return lib.to_batch(sample(k1), config), k2

    state, sec = lib.run_loop(
        "teacher",
        trainer.init(tp),
        lambda s, step, b, k: trainer.update(s, b, k),
        inputs,
        config.teacher_train_steps,
        workdir,
        config,
        key=key,
    )
    return state.params, sec


def distil(tg, tp, sg, sp, ag, ap, sample, config, schedule, workdir, *, key):
    """All stages; returns [(steps, substeps, student params, s/step)] per stage."""
    sigmas = msr.curriculum_sigmas(config.curriculum_levels, config.curriculum_sigma_max)
    plan = msr.halving_schedule(config.teacher_steps, config.stages)
    target_gd, target_p = tg, tp
    out = []
    for k, (steps, substeps) in enumerate(plan):
        dist = msr.make_distiller(
            sg,
            ag,
            tg,
            target_gd,
            lib.adam(config.student_lr, config.stage_steps),
            schedule=schedule,
            num_steps=steps,
            substeps=substeps,
            feature_weight=config.feature_weight,
        )

        def update(state, step, batch, kk, dist=dist, target_p=target_p):
            level = msr.curriculum_level(step, config.stage_steps, config.curriculum_levels)
            state, metrics = dist.update(state, tp, target_p, batch, kk, sigmas[level])
            return state, metrics | {"blur_sigma": sigmas[level]}

        def inputs(kk):
            k1, k2 = jax.random.split(kk)
            return lib.to_batch(sample(k1), config), k2

        state, sec = lib.run_loop(
            f"stage{k}",
            dist.init(sp, ap),
            update,
            inputs,
            config.stage_steps,
            workdir,
            config,
            key=jax.random.fold_in(key, k),
        )
        sp, ap = state.params["student"], state.params["adapters"]
        out.append((steps, substeps, sp, sec))
        target_gd, target_p = sg, sp
        logging.info("stage %d: %d steps (substeps %d), %.3f s/step", k, steps, substeps, sec)
    return out


def eval_batch(test, val, config):
    """Test slices, (if enabled) dipy's real slice, centre-cropped, and the validation slices
    as one batch (one compiled sampler per model); returns (t1, gm, wm, {split: rows})."""
    parts = [test]
    if config.dipy_eval:
        dipy = msr.load_dipy_t1_slice()
        ch, cw = config.crop
        top, left = (dipy.shape[0] - ch) // 2, (dipy.shape[1] - cw) // 2
        d = jnp.asarray(dipy[top : top + ch, left : left + cw])[None]
        z = jnp.zeros_like(d)  # no tissue maps: no contrast change is simulated for dipy
        parts.append((d, z, z))
    parts.append(val)
    n_test, n_dipy, n_val = test[0].shape[0], int(config.dipy_eval), val[0].shape[0]
    rows = {
        "test": slice(0, n_test),
        "dipy": slice(n_test, n_test + n_dipy),
        "val": slice(n_test + n_dipy, n_test + n_dipy + n_val),
    }
    t1, gm, wm = (jnp.concatenate(x) for x in zip(*parts, strict=True))
    return t1, gm, wm, rows


def train_and_evaluate(config, workdir):
    if config.xla_flags:  # read when the backend starts, i.e. at the first computation below
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {config.xla_flags}".strip()
    workdir = pathlib.Path(workdir)
    key = jax.random.key(config.seed)
    k_pool, k_teacher, k_student, k_eval, k_sample = jax.random.split(key, 5)
    schedule = msr.make_schedule(config.schedule)
    train, test, val, train_idx, test_idx, val_idx = lib.load_split(config)
    pool = lib.build_pool(train, config, key=k_pool)
    logging.info(
        "train slices %d, test %d, validation %d, pool %d",
        len(train_idx),
        len(test_idx),
        len(val_idx),
        pool[0].shape[0],
    )
    sample = jax.jit(lambda k: lib.sample_patches(pool, config.patch, config.batch_size, key=k))

    teacher, student, adapters = lib.make_nets(config)
    (tg, tp), (sg, sp), (ag, ap) = nnx.split(teacher), nnx.split(student), nnx.split(adapters)
    params = {"teacher": msr.count_params(teacher), "student": msr.count_params(student)}
    tp, teacher_sec = train_teacher(tg, tp, sample, config, schedule, workdir, key=k_teacher)
    stages = distil(tg, tp, sg, sp, ag, ap, sample, config, schedule, workdir, key=k_student)
    final_steps, _, final_p, _ = stages[-1]
    trained = {}  # the MoEDiff-SR issue's models, trained on the same pool
    if config.baselines:
        for i, (name, model) in enumerate(bl.make_models(config).items()):
            params[name] = msr.count_params(model)
            trained[name] = bl.train(
                name, model, pool, config, workdir, key=jax.random.fold_in(key, 100 + i)
            )

    samplers = {}

    def sampler(gd, steps):
        """Jitted (params, cond, key) -> HR estimate of a guided v-net with DDIM `steps`."""
        if (gd, steps) not in samplers:
            samplers[(gd, steps)] = jax.jit(
                lambda p, c, k: msr.sample_sr(
                    gd,
                    p,
                    c,
                    key=k,
                    schedule=schedule,
                    num_steps=steps,
                    residual_scale=config.residual_scale,
                )
            )
        return samplers[(gd, steps)]

    t1, gm, wm, split = eval_batch(test, val, config)
    methods = {"teacher": (sampler(tg, config.teacher_steps), tp, config.teacher_steps)}
    if config.teacher_one_step:
        methods[TEACHER_1] = (sampler(tg, 1), tp, 1)
    methods["student"] = (sampler(sg, final_steps), final_p, final_steps)
    for name, (gd, p, _) in trained.items():
        methods[name] = (bl.predictor(name, gd, config), p, config.moe.sample_steps)
    results, stage_rows, images, timing, cpu_timing = {}, {}, {}, {}, {}
    for scale in config.eval_scales:
        k = jax.random.fold_in(k_eval, int(10 * scale))
        hr, up, base, g = lib.simulate(t1, gm, wm, config, scale, key=k)
        cond = jnp.concatenate([base[..., None], g], axis=-1)
        preds = {"bicubic": up, "bicubic+maps": base}
        for name, (fn, p, _) in methods.items():
            preds[name] = fn(p, cond, k_sample)
        rows = {m: lib.slice_metrics(x, hr) for m, x in preds.items()}
        results[scale] = {
            where: {m: lib.medians(r[split[where]]) for m, r in rows.items()}
            for where in ("test", "val")
        }
        results[scale]["dipy"] = (
            {m: r[split["dipy"]][0] for m, r in rows.items()} if config.dipy_eval else None
        )
        images[scale] = (hr[0], {m: x[0] for m, x in preds.items()})
        for j, (steps, _, p, _) in enumerate(stages[:-1] if config.stage_eval else []):
            x = sampler(sg, steps)(p, cond, k_sample)
            r = lib.slice_metrics(x, hr)
            stage_rows[(j, scale)] = {w: lib.medians(r[split[w]]) for w in ("test", "val")}
        stage_rows[(len(stages) - 1, scale)] = {
            w: results[scale][w]["student"] for w in ("test", "val")
        }
        if scale == max(config.eval_scales):
            for name, (fn, p, _) in methods.items():
                _, sec, cpu = lib.timed(fn, p, cond, k_sample, repeats=config.time_repeats)
                timing[name] = sec / cond.shape[0]
                cpu_timing[name] = cpu / cond.shape[0]
        logging.info(
            "x%s: %s", scale, {m: round(r["psnr"], 2) for m, r in results[scale]["test"].items()}
        )

    h, w = config.crop
    nets = {"teacher": (tg, tp), "student": (sg, final_p)}
    nets |= {name: (gd, p) for name, (gd, p, _) in trained.items()}
    cost = {m: msr.forward_cost(gd, p, (1, h, w, 1), 3) for m, (gd, p) in nets.items()}
    steps_of = {m: steps for m, (_, _, steps) in methods.items()}
    train_sec = {"teacher": teacher_sec} | {m: sec for m, (_, _, sec) in trained.items()}
    figures = [
        _sample_figure(workdir, images, config),
        _stage_figure(workdir, stages, stage_rows, results, config),
    ]
    tables = _tables(
        config, results, stages, stage_rows, params, cost, steps_of, timing, cpu_timing, train_sec
    )
    claims = _claims(config, results, cpu_timing, steps_of)
    xplib.write_results(
        workdir,
        experiment="sr_distill",
        paper=PAPER,
        preset=config.preset,
        claims=claims,
        tables=tables,
        figures=figures,
        notes=(
            f"MNI152 1 mm axial slices, crop {tuple(config.crop)}, test slabs "
            f"{list(config.test_slabs)} (final numbers only), validation slabs "
            f"{list(config.val_slabs)} (settings are chosen on them), both disjoint from the "
            f"training slices; 1.5T-like inputs simulated (noise {config.noise_sigma}, "
            f"bias {config.bias_strength}, warp {config.warp_strength}, contrast loss "
            f"{config.contrast_reduction}); trained on x{list(config.train_scales)}, x2.5 unseen. "
            f"Teacher {config.teacher_train_steps} steps; distillation {config.stages} stages x "
            f"{config.stage_steps} steps; MoEDiff-SR and the single expert (moediff_sr's "
            f"{config.preset} configuration, same pool and conditioning) "
            f"{config.moe.train_steps} steps of batch {config.moe.batch_size} each, DDIM "
            f"{config.moe.sample_steps} step(s). 'teacher (1 step)': the teacher's one-step "
            "estimate. Timings on this machine's CPU, one run, per slice of the evaluation "
            "batch (test + dipy + validation slices). PSNR on a "
            "template brain is not comparable with the paper's 1.5T/7T numbers (not retrievable)."
        ),
        extra={
            "train_slices": train_idx.tolist(),
            "test_slices": test_idx.tolist(),
            "val_slices": val_idx.tolist(),
            "params": params,
        },
    )


def _tables(
    config, results, stages, stage_rows, params, cost, steps_of, timing, cpu_timing, train_sec
):
    names = [m for m in NAMES if m in results[config.eval_scales[0]]["test"]]
    tables = []
    for where in ("test", "dipy"):
        if where == "dipy" and not config.dipy_eval:
            continue
        rows = []
        for scale in config.eval_scales:
            tag = f"x{scale:g}" + (" (unseen)" if scale not in config.train_scales else "")
            for m in names:
                r = results[scale][where][m]
                rows.append([tag, m] + [round(r[k], 4) for k in METRICS])
        title = (
            "held-out slabs, medians over slices"
            if where == "test"
            else "dipy's real T1 slice (out of distribution)"
        )
        tables.append(xplib.Table(title, ["scale", "method", *METRICS], rows))
    h, w = config.crop
    cost_rows = []
    for m in [m for m in names if m in timing]:
        net = "teacher" if m == TEACHER_1 else m
        mflop = cost[net]["flops"] / 1e6
        cost_rows.append(
            [
                m,
                params[net],
                round(mflop, 2),
                steps_of[m],
                round(mflop * steps_of[m] / 1e3, 3),
                round(train_sec[net], 4) if net in train_sec else "-",
                round(timing[m], 4),
                round(timing["teacher"] / timing[m], 2),
                round(cpu_timing[m], 4),
                round(cpu_timing["teacher"] / cpu_timing[m], 2),
            ]
        )
    tables.append(
        xplib.Table(
            f"Cost per {h}x{w} slice (FLOPs: XLA cost analysis; time: median of "
            f"{config.time_repeats}, x{max(config.eval_scales):g} batch; speed-up vs the teacher; "
            "CPU = process CPU time, all threads)",
            [
                "model",
                "params",
                "MFLOP / network call",
                "steps",
                "GFLOP / slice",
                "train s/step",
                "wall s / slice",
                "wall speed-up",
                "CPU s / slice",
                "CPU speed-up",
            ],
            cost_rows,
        )
    )
    s4 = max(config.eval_scales)
    srows = [
        ["teacher", config.teacher_steps, "-", round(train_sec["teacher"], 4)]
        + [round(results[s]["test"]["teacher"]["psnr"], 3) for s in config.eval_scales]
        + [round(results[s4]["test"]["teacher"][m], 4) for m in ("ssim", "hfen")]
    ]
    for k, (steps, substeps, _, sec) in enumerate(stages):
        if (k, config.eval_scales[0]) not in stage_rows:
            continue
        srows.append(
            [f"student stage {k}", steps, substeps, round(sec, 4)]
            + [round(stage_rows[(k, s)]["test"]["psnr"], 3) for s in config.eval_scales]
            + [round(stage_rows[(k, s4)]["test"][m], 4) for m in ("ssim", "hfen")]
        )
    tables.append(
        xplib.Table(
            f"Step halving stage by stage: PSNR (held-out) per scale, SSIM / HFEN at x{s4:g}",
            ["model", "sampling steps", "substeps", "train s/step"]
            + [f"psnr x{s:g}" for s in config.eval_scales]
            + [f"ssim x{s4:g}", f"hfen x{s4:g}"],
            srows,
        )
    )
    tables.append(_validation_table(config, results, stages, stage_rows, names, steps_of))
    return tables


def _validation_table(config, results, stages, stage_rows, names, steps_of):
    """PSNR on the validation slab: every method and every student stage (settings are
    compared on this table only)."""
    s4 = max(config.eval_scales)
    rows = []
    for m in names:
        rows.append(
            [m, steps_of.get(m, "-")]
            + [round(results[s]["val"][m]["psnr"], 3) for s in config.eval_scales]
            + [round(results[s4]["val"][m][k], 4) for k in ("ssim", "hfen")]
        )
    for k, (steps, _, _, _) in enumerate(stages):
        if (k, config.eval_scales[0]) not in stage_rows:
            continue
        rows.append(
            [f"student stage {k}", steps]
            + [round(stage_rows[(k, s)]["val"]["psnr"], 3) for s in config.eval_scales]
            + [round(stage_rows[(k, s4)]["val"][m], 4) for m in ("ssim", "hfen")]
        )
    return xplib.Table(
        f"validation slab {list(config.val_slabs)} (settings are chosen here, never on the "
        f"test slabs): PSNR medians over slices per scale, SSIM / HFEN at x{s4:g}",
        ["method", "sampling steps"]
        + [f"psnr x{s:g}" for s in config.eval_scales]
        + [f"ssim x{s4:g}", f"hfen x{s4:g}"],
        rows,
    )


def _claims(config, results, timing, steps_of):
    s4 = max(config.eval_scales)
    unseen = [s for s in config.eval_scales if s not in config.train_scales]
    r4 = results[s4]["test"]
    claims = [
        xplib.Claim(
            f"student within 0.5 dB of the teacher (x{s4:g}, held-out)",
            "PSNR dB",
            round(r4["student"]["psnr"], 3),
            round(r4["teacher"]["psnr"], 3),
            "student 'sacrifices minimal performance' (tables not retrievable); issue target: "
            "within 0.5 dB",
            baseline_name="teacher",
        ),
        xplib.Claim(
            f"student sampling time per slice (x{s4:g}; {steps_of['student']} vs "
            f"{steps_of['teacher']} steps)",
            "CPU s / slice",
            round(timing["student"], 4),
            round(timing["teacher"], 4),
            "smaller deployable model (no timing given); issue target: >= 4x less time",
            baseline_name="teacher",
            better="lower",
        ),
        xplib.Claim(
            f"teacher vs bicubic + correction maps (x{s4:g}, held-out; both use the maps)",
            "PSNR dB",
            round(r4["teacher"]["psnr"], 3),
            round(r4["bicubic+maps"]["psnr"], 3),
            "teacher 'achieves state-of-the-art SR performance' (tables not retrievable; "
            "anchor: 7T-Restormer 1.5T->7T 26.0 dB / SSIM 0.861, 10.5M params)",
            baseline_name="bicubic+maps",
        ),
    ]
    if "moediff_sr" in r4:
        claims.append(
            xplib.Claim(
                f"student vs MoEDiff-SR trained on the same data (x{s4:g}, held-out)",
                "PSNR dB",
                round(r4["student"]["psnr"], 3),
                round(r4["moediff_sr"]["psnr"], 3),
                "issue: compare with the MoEDiff-SR issue's models (no paper number)",
                baseline_name="moediff_sr",
            )
        )
    for s in unseen:
        r = results[s]["test"]
        claims.append(
            xplib.Claim(
                f"student at the unseen scale x{s:g} without retraining vs bicubic",
                "PSNR dB",
                round(r["student"]["psnr"], 3),
                round(r["bicubic"]["psnr"], 3),
                "student accepts varying input resolutions without retraining (qualitative)",
                baseline_name="bicubic",
            )
        )
    return claims


def _sample_figure(workdir, images, config):
    scales = [max(config.eval_scales)] + [
        s for s in config.eval_scales if s not in config.train_scales
    ]
    names = [m for m in NAMES if m in images[scales[0]][1] and m != TEACHER_1]
    fig, axes = plt.subplots(
        len(scales),
        len(names) + 1,
        figsize=(2.3 * (len(names) + 1), 2.4 * len(scales)),
        squeeze=False,
    )
    for i, s in enumerate(scales):
        hr, preds = images[s]
        axes[i, 0].imshow(np.asarray(hr).T, cmap="gray", origin="lower", vmin=0, vmax=1)
        axes[i, 0].set_title(f"HR (x{s:g} row)")
        for j, m in enumerate(names, 1):
            axes[i, j].imshow(np.asarray(preds[m]).T, cmap="gray", origin="lower", vmin=0, vmax=1)
            axes[i, j].set_title(m)
    for a in axes.ravel():
        a.set_xticks([])
        a.set_yticks([])
    return xplib.save_figure(fig, workdir, "samples")


def _stage_figure(workdir, stages, stage_rows, results, config):
    fig, ax = plt.subplots(figsize=(5, 3.4))
    done = [k for k in range(len(stages)) if (k, config.eval_scales[0]) in stage_rows]
    steps = [stages[k][0] for k in done]
    for scale in config.eval_scales:
        ys = [stage_rows[(k, scale)]["test"]["psnr"] for k in done]
        line = ax.plot(steps, ys, "o-", label=f"student x{scale:g}")[0]
        ax.axhline(
            results[scale]["test"]["teacher"]["psnr"], color=line.get_color(), ls="--", lw=0.8
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("student sampling steps (stage by stage)")
    ax.set_ylabel("PSNR dB (dashed: teacher)")
    ax.legend(fontsize=7)
    return xplib.save_figure(fig, workdir, "step_halving")
