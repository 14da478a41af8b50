"""Data, models, checkpointed training loops and timing for the sr_distill experiment."""

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

import mri_sr_jax as msr
import xplib


def fieldsim_config(config, scale) -> msr.FieldSimConfig:
    return msr.FieldSimConfig(
        scale=float(scale),
        noise_sigma=config.noise_sigma,
        bias_strength=config.bias_strength,
        warp_strength=config.warp_strength,
        contrast_reduction=config.contrast_reduction,
    )


def load_split(config):
    """HR slices (n, h, w) and GM/WM maps of the training, held-out test and validation slabs.

    Returns `(train, test, val, train_idx, test_idx, val_idx)`, each of train/test/val a
    `(t1, gm, wm)` tuple (as `moediff_sr`'s `load_split`). The validation slabs
    (`config.val_slabs`, every `config.val_stride`-th slice) are held out from training like
    the test slabs (same gap) and serve every choice of settings; the test slabs (every
    `config.test_stride`-th slice) give the final numbers only.
    """
    return msr.train_val_test_split(
        msr.load_mni152(),
        config.test_slabs,
        config.get("val_slabs", []),
        gap=config.slab_gap,
        min_brain=config.min_brain,
        train_stride=config.train_stride,
        test_stride=config.test_stride,
        val_stride=config.get("val_stride", 1),
        crop=tuple(config.crop),
    )


_upsample = jax.jit(msr.upsample, static_argnums=1)
_correct = jax.jit(msr.correct_lowfield)


def simulate(t1, gm, wm, config, scale, *, key):
    """(hr, bicubic lr, corrected bicubic lr (HR grid), guidance (b, h, w, 2)) at one scale.

    The corrected image (bias divided out, warp undone with the correction maps) is the base
    the diffusion models add their residual to; the maps are also guidance channels.
    """
    sim = msr.simulate_lowfield(t1, gm, wm, fieldsim_config(config, scale), key=key)
    up = _upsample(sim.lr, tuple(t1.shape[1:]))
    return sim.hr, up, _correct(up, sim), msr.guidance_maps(sim)


def build_pool(train, config, *, key):
    """Training pool on the HR grid: hr, corrected lr_up, log-bias, displacement (n, h, w)
    and the region label map (n, h, w) of `msr.region_masks` (0 none, i + 1 region i; only
    the MoEDiff-SR models' region-informed gate target uses it, no network sees it)."""
    t1, gm, wm = train
    masks = msr.region_masks(gm, wm)
    labels = (masks * jnp.arange(1, masks.shape[-1] + 1)).max(-1).astype(jnp.int32)
    parts = []
    for r in range(config.pool_repeats):
        for scale in config.train_scales:
            k = jax.random.fold_in(key, 7 * r + int(10 * scale))
            hr, _, base, g = simulate(t1, gm, wm, config, scale, key=k)
            parts.append((hr, base, g[..., 0], g[..., 1], labels))
    return tuple(jnp.concatenate(x) for x in zip(*parts, strict=True))


def sample_patches(pool, patch: int, batch: int, *, key):
    """Random patches of every pool array, preferring brain over background."""
    n, h, w = pool[0].shape
    k1, k2, k3 = jax.random.split(key, 3)
    cand = 4 * batch
    idx = jax.random.randint(k1, (cand,), 0, n)
    ys = jax.random.randint(k2, (cand,), 0, h - patch + 1)
    xs = jax.random.randint(k3, (cand,), 0, w - patch + 1)

    def crop(a, i, y, x):
        return jax.lax.dynamic_slice(a[i], (y, x), (patch, patch))

    crops = [jax.vmap(crop, in_axes=(None, 0, 0, 0))(a, idx, ys, xs) for a in pool]
    keep = jnp.argsort(-(crops[0] > 0.05).mean(axis=(1, 2)))[:batch]
    return tuple(c[keep] for c in crops)


def to_batch(patches, config, *, regions: int = 0) -> msr.SRBatch:
    """SRBatch of pool patches; `regions` = k > 0 adds the k one-hot region masks."""
    hr, up, lb, disp, labels = patches
    masks = jax.nn.one_hot(labels - 1, regions) if regions else None
    return msr.make_batch(hr, up, (lb, disp), residual_scale=config.residual_scale, regions=masks)


def make_nets(config, cond_channels: int = 3):
    teacher = msr.init_fast(
        lambda: msr.GuidedUNet(
            cond_channels, tuple(config.teacher_widths), config.teacher_emb, rngs=nnx.Rngs(0)
        ),
        seed=config.seed,
    )
    student = msr.init_fast(
        lambda: msr.GuidedUNet(
            cond_channels,
            tuple(config.student_widths),
            config.student_emb,
            multiscale_cond=True,
            rngs=nnx.Rngs(0),
        ),
        seed=config.seed + 1,
    )
    adapters = msr.init_fast(
        lambda: msr.FeatureAdapters(
            student, teacher, tuple(config.feature_layers), rngs=nnx.Rngs(0)
        ),
        seed=config.seed + 2,
    )
    return teacher, student, adapters


def adam(lr, steps):
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.1)),
    )


def _restore(mngr, state):
    step = mngr.latest_step()
    if step is None:
        return state, 0
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return mngr.restore(step, args=ocp.args.StandardRestore(target)), int(step)


def run_loop(name, state, update, make_inputs, total, workdir, config, *, key):
    """Checkpointed loop: resumes from `<workdir>/<name>`; returns (state, seconds per step)."""
    mngr = xplib.checkpoint_manager(pathlib.Path(workdir) / name)
    state, start = _restore(mngr, state)
    if start:
        logging.info("%s: resumed at step %d", name, start)
    logger = xplib.MetricLogger(workdir, f"metrics_{name}.jsonl")
    t0, done = time.time(), 0
    every = config.ckpt_every or total
    for step in xplib.progress(range(start, total), desc=name):
        state, metrics = update(state, step, *make_inputs(jax.random.fold_in(key, step)))
        done += 1
        if (step + 1) % config.log_every == 0 or step + 1 == total:
            logger.log(step + 1, **{k: float(v) for k, v in metrics.items()})
        if (step + 1) % every == 0 or step + 1 == total:
            jax.block_until_ready(state)
            mngr.save(step + 1, args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()
    record = pathlib.Path(workdir) / f"seconds_per_step_{name}.json"
    if done:  # a fully resumed loop reports the time measured when it trained
        record.write_text(json.dumps((time.time() - t0) / done))
    return state, json.loads(record.read_text()) if record.exists() else float("nan")


def timed(fn, *args, repeats: int = 1):
    """(result, median wall seconds, median process CPU seconds) of a jitted call after one
    warm-up call. CPU time (all XLA threads) is the robust figure on a shared machine."""
    out = jax.block_until_ready(fn(*args))
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return out, float(np.median(times)), float(np.median(cpu))


_metrics_fn = jax.jit(jax.vmap(lambda x, r: msr.image_metrics(x, r)))


def slice_metrics(pred, hr):
    m = {k: np.asarray(v) for k, v in _metrics_fn(pred, hr).items()}
    return [{k: float(v[i]) for k, v in m.items()} for i in range(hr.shape[0])]


def medians(rows):
    return {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
