"""Benchmark: KGS-GCN vs ST-GCN (as published, with our multi-scale temporal block, and scaled
to KGS-GCN's parameter count) / CTR-GCN-lite (parameter-matched) / the heatmap-only
CNN (PoseC3D-lite): throughput and FLOPs, the renderer's cost (v1 vs exact vs separable) and
share of the forward pass, dense vs segment_sum graph convolution.

    python packages/skel_gcn_jax/benchmarks/bench_kgs.py [--out /tmp/bench_kgs.json] [--batch 16]
    python packages/skel_gcn_jax/benchmarks/bench_kgs.py --paper-scale  # FLOPs only, 9 blocks

Prints tables and writes JSON. Medians of `--repeats` timed calls after one warm-up (compile).
Times are the process's CPU time (user + sys of all XLA threads, `time.process_time`), which
stays meaningful on a shared, loaded machine where wall time swings several-fold; wall-clock
medians are written to the JSON too. Throughput is `batch / CPU seconds`. FLOPs,
transcendentals and bytes are XLA's cost analysis of the compiled HLO.
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import skel_gcn_jax as sg
from skel_gcn_jax._models import _positions
from skel_gcn_jax._splat import joint_velocity, splat_covariances

WALL = {}


def _time(f, *args, repeats):
    """Median CPU seconds of `f(*args)` (the wall-clock median goes to `WALL[f]`)."""
    jax.block_until_ready(f(*args))
    cpu, wall = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(f(*args))
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
    WALL[f] = statistics.median(wall)
    return statistics.median(cpu)


def _cost(f, *args):
    cost = jax.jit(f).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    keys = ("flops", "transcendentals", "bytes accessed")
    return {k: float(cost.get(k, float("nan"))) for k in keys}


def render_v1(positions, valid, config):
    """The first version's renderer, frozen here as the 'before' of the speed-up: 3x3
    covariances through tiny einsums, a `(..., V, G, G)` density with joints major, and the
    body-part sum as an einsum over a non-minor axis."""
    vel = joint_velocity(positions, valid)
    cov = splat_covariances(
        vel, sigma=config.sigma, stretch=config.stretch, isotropic=config.isotropic
    )
    proj = jnp.asarray(np.asarray(config.views, np.float32).reshape(-1, 2, 3))
    mu = jnp.einsum("kij,...vj->...kvi", proj, positions) / config.extent
    cov2 = jnp.einsum("kij,...vjl,kml->...kvim", proj, cov, proj) / config.extent**2
    a, b, d = cov2[..., 0, 0], cov2[..., 0, 1], cov2[..., 1, 1]
    det = a * d - b * b
    ia, ib, id_ = d / det, -b / det, a / det
    g = config.grid
    centres = ((jnp.arange(g) + 0.5) / g * 2.0 - 1.0).reshape((1,) * (mu.ndim - 1) + (g,))
    du, dv = centres - mu[..., 0, None], centres - mu[..., 1, None]
    q = (
        ia[..., None, None] * du[..., None, :] ** 2
        + 2.0 * ib[..., None, None] * dv[..., :, None] * du[..., None, :]
        + id_[..., None, None] * dv[..., :, None] ** 2
    )
    dens = jnp.exp(-0.5 * q) * valid[..., None, :, None, None]
    onehot = jax.nn.one_hot(jnp.asarray(config.groups), max(config.groups) + 1)
    return jnp.einsum("...kvij,vp->...kpij", dens, onehot)


def _skeleton_render(render, config):
    def f(x):
        pos, valid = _positions(x)
        return jnp.sum(render(pos, valid, config), axis=1)

    return f


PAPER_CHANNELS = (64, 64, 64, 128, 128, 128, 192, 192, 192)


def paper_scale(a):
    """XLA FLOPs per sequence of the paper-sized models (T 64, 2 persons, 32^2 heatmaps), beside
    the published 1.3 GFLOPs (KGS-GCN) and 1.97 GFLOPs (CTR-GCN); nothing is timed."""
    x = 0.3 * jax.random.normal(jax.random.key(0), (2, 3, 64, 25, 2))
    splat = sg.SplatConfig(grid=32, separable=True)
    kgs = sg.kgs_gcn_config(60, PAPER_CHANNELS, splat=splat)
    rows = []
    for name, cfg in {
        "kgs_gcn": kgs,
        "kgs_gcn_exact_render": kgs._replace(splat=splat._replace(separable=False)),
        "st_gcn": sg.st_gcn_config(60, PAPER_CHANNELS),
        "ctr_gcn": sg.widen_to_params(sg.ctr_gcn_config(60, PAPER_CHANNELS), sg.config_params(kgs)),
        "heatmap_cnn_w64": None,  # PoseC3D-lite, 32^2 isotropic heatmaps
    }.items():
        if cfg is None:
            model = nnx.eval_shape(
                lambda: sg.HeatmapCNN(
                    60, width=64, splat=splat._replace(isotropic=True), rngs=nnx.Rngs(0)
                )
            )
        else:
            model = nnx.eval_shape(lambda c=cfg: sg.GCNClassifier(c, rngs=nnx.Rngs(0)))
        graphdef, params = nnx.split(model)
        cost = _cost(lambda p, x, g=graphdef: nnx.merge(g, p)(x), params, x)
        rows.append(
            {
                "model": name,
                "params": sg.count_params(model),
                "gflops_per_seq": cost["flops"] / 2 / 1e9,
            }
        )
        print(
            f"{name:22s} {rows[-1]['params']:9d} params {rows[-1]['gflops_per_seq']:7.2f} GFLOP/seq"
        )
    with open(a.out, "w") as f:
        json.dump({"paper_scale": rows, "paper": {"kgs_gcn": 1.3, "ctr_gcn": 1.97}}, f, indent=2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="/tmp/bench_kgs.json")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--channels", default="32,64")
    p.add_argument("--grid", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--hcnn-width", type=int, default=12, help="HeatmapCNN width (~KGS params)")
    p.add_argument("--paper-scale", action="store_true", help="FLOPs of the 9-block models only")
    a = p.parse_args()
    if a.paper_scale:
        return paper_scale(a)
    ch = tuple(int(c) for c in a.channels.split(","))
    exact = sg.SplatConfig(grid=a.grid)
    separable = exact._replace(separable=True)
    x = 0.3 * jax.random.normal(jax.random.key(0), (a.batch, 3, a.frames, 25, 1))
    y = jnp.zeros((a.batch,), jnp.int32)
    kgs_cfg = sg.kgs_gcn_config(12, ch, splat=separable)
    configs = {
        "kgs_gcn": kgs_cfg,
        "kgs_gcn_exact_render": kgs_cfg._replace(splat=exact),
        "st_gcn": sg.st_gcn_config(12, ch),  # one (9, 1) temporal conv per block, as published
        # ST-GCN with our multi-scale temporal block (the one KGS-GCN uses): the like-for-like ratio
        "st_gcn_multiscale": sg.st_gcn_config(12, ch, temporal="multiscale"),
        "st_gcn_wide": sg.widen_to_params(sg.st_gcn_config(12, ch), sg.config_params(kgs_cfg)),
        "ctr_gcn": sg.widen_to_params(sg.ctr_gcn_config(12, ch), sg.config_params(kgs_cfg)),
    }
    # the heatmap-only baseline (PoseC3D-lite), width chosen near KGS-GCN's parameter count;
    # it renders its own isotropic heatmaps inside the forward, like KGS-GCN
    configs["heatmap_cnn"] = None
    rows = []
    for name, cfg in configs.items():
        if cfg is None:
            splat = separable._replace(isotropic=True)
            model = sg.HeatmapCNN(12, width=a.hcnn_width, splat=splat, rngs=nnx.Rngs(0))
        else:
            model = sg.GCNClassifier(cfg, rngs=nnx.Rngs(0))
        trainer = sg.make_trainer(model, optax.adam(1e-3))
        state = trainer.init(model)
        graphdef = nnx.graphdef(model)
        fwd = lambda p, x, g=graphdef: nnx.merge(g, p)(x)  # noqa: E731  (renders inside)
        t_inf = _time(trainer.predict, state.params, x, repeats=a.repeats)
        t_train = _time(lambda s, t=trainer: t.update(s, x, y)[0], state, repeats=a.repeats)
        flops = _cost(fwd, state.params, x)["flops"] / a.batch
        rows.append(
            {
                "model": name,
                "channels": [a.hcnn_width] if cfg is None else list(cfg.channels),
                "params": sg.count_params(model),
                "infer_seq_per_s": a.batch / t_inf,
                "train_seq_per_s": a.batch / t_train,
                "gflops_per_seq": flops / 1e9,
                "infer_ms": 1e3 * t_inf,
                "infer_wall_ms": 1e3 * WALL[trainer.predict],
            }
        )
    by = {r["model"]: r for r in rows}
    for r in rows:
        r["infer_cost_vs_st_gcn"] = r["infer_ms"] / by["st_gcn"]["infer_ms"]
        r["infer_cost_vs_st_gcn_multiscale"] = r["infer_ms"] / by["st_gcn_multiscale"]["infer_ms"]
    renders = {}
    for name, fn, cfg, dtype, model in [
        ("v1 (before)", render_v1, exact, jnp.float32, "kgs_gcn_exact_render"),
        ("exact", sg.render_heatmaps, exact, jnp.float32, "kgs_gcn_exact_render"),
        ("separable", sg.render_heatmaps, separable, jnp.float32, "kgs_gcn"),
        ("separable bf16", sg.render_heatmaps, separable, jnp.bfloat16, "kgs_gcn"),
    ]:
        f = _skeleton_render(fn, cfg)
        xd = x.astype(dtype)
        jf = jax.jit(f)
        t = _time(jf, xd, repeats=a.repeats)
        renders[name] = {
            "ms": 1e3 * t,
            "wall_ms": 1e3 * WALL[jf],
            "share_of_forward": t / (by[model]["infer_ms"] / 1e3),
            "forward_of": model,
            **_cost(f, xd),
        }
    g = sg.ntu_graph()
    dense = sg.graph_to_dense(g)
    h = jax.random.normal(jax.random.key(1), (a.batch, a.frames, 25, 64))
    t_dense = _time(jax.jit(lambda h: sg.graph_conv_dense(h, dense)), h, repeats=a.repeats)
    t_seg = _time(jax.jit(lambda h: sg.graph_conv_segment_sum(h, g)), h, repeats=a.repeats)

    print(
        f"batch {a.batch}, T {a.frames}, channels {ch}, grid {a.grid}, {jax.devices()[0]}; "
        "CPU-time medians"
    )
    print(
        f"{'model':22s} {'channels':>10s} {'params':>7s} {'infer seq/s':>11s} "
        f"{'train seq/s':>11s} {'GFLOP/seq':>9s} {'cost/ST-GCN':>11s} {'/ST-GCN-ms':>10s}"
    )
    for r in rows:
        print(
            f"{r['model']:22s} {str(tuple(r['channels'])):>10s} {r['params']:7d} "
            f"{r['infer_seq_per_s']:11.1f} {r['train_seq_per_s']:11.1f} "
            f"{r['gflops_per_seq']:9.4f} {r['infer_cost_vs_st_gcn']:11.2f} "
            f"{r['infer_cost_vs_st_gcn_multiscale']:10.2f}"
        )
    print(f"{'renderer':16s} {'ms':>8s} {'% fwd':>6s} {'MFLOP':>8s} {'M exp':>7s} {'MB':>7s}")
    for name, r in renders.items():
        print(
            f"{name:16s} {r['ms']:8.1f} {100 * r['share_of_forward']:6.0f} "
            f"{r['flops'] / 1e6:8.1f} {r['transcendentals'] / 1e6:7.2f} "
            f"{r['bytes accessed'] / 1e6:7.1f}"
        )
    print(
        f"graph conv: dense {1e3 * t_dense:.2f} ms vs segment_sum {1e3 * t_seg:.2f} ms "
        f"({t_seg / t_dense:.1f}x)"
    )
    out = {
        "args": vars(a),
        "models": rows,
        "renderers": renders,
        "dense_ms": 1e3 * t_dense,
        "segment_sum_ms": 1e3 * t_seg,
        "device": str(jax.devices()[0]),
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
