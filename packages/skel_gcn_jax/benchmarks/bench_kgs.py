"""Benchmark: KGS-GCN vs ST-GCN / CTR-GCN-lite throughput and FLOPs, renderer share, dense vs
segment_sum graph convolution.

    python packages/skel_gcn_jax/benchmarks/bench_kgs.py [--out /tmp/bench_kgs.json] [--batch 16]

Prints a table and writes JSON. Medians of `--repeats` timed calls after one warm-up (compile).
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import skel_gcn_jax as sg


def _time(f, *args, repeats):
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _flops(f, *args):
    cost = jax.jit(f).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="/tmp/bench_kgs.json")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--channels", default="32,64")
    p.add_argument("--grid", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    ch = tuple(int(c) for c in a.channels.split(","))
    splat = sg.SplatConfig(grid=a.grid)
    x = 0.3 * jax.random.normal(jax.random.key(0), (a.batch, 3, a.frames, 25, 1))
    y = jnp.zeros((a.batch,), jnp.int32)
    rows = []
    for name, cfg in [
        ("kgs_gcn", sg.kgs_gcn_config(12, ch, splat=splat)),
        ("st_gcn", sg.st_gcn_config(12, ch)),
        ("ctr_gcn", sg.ctr_gcn_config(12, ch)),
    ]:
        model = sg.GCNClassifier(cfg, rngs=nnx.Rngs(0))
        trainer = sg.make_trainer(model, optax.adam(1e-3))
        state = trainer.init(model)
        graphdef = nnx.graphdef(model)
        fwd = lambda p, x, g=graphdef: nnx.merge(g, p)(x)  # noqa: E731  (renders inside)
        t_inf = _time(trainer.predict, state.params, x, repeats=a.repeats)
        t_train = _time(lambda s, t=trainer: t.update(s, x, y)[0], state, repeats=a.repeats)
        flops = _flops(fwd, state.params, x) / a.batch
        rows.append(
            {
                "model": name,
                "params": sg.count_params(model),
                "infer_seq_per_s": a.batch / t_inf,
                "train_seq_per_s": a.batch / t_train,
                "gflops_per_seq": flops / 1e9,
                "infer_ms": 1e3 * t_inf,
            }
        )
    base = next(r for r in rows if r["model"] == "st_gcn")
    for r in rows:
        r["infer_cost_vs_st_gcn"] = base["infer_seq_per_s"] / r["infer_seq_per_s"]
    render = jax.jit(lambda x: sg.render_skeleton_heatmaps(x, splat))
    t_render = _time(render, x, repeats=a.repeats)
    kgs = rows[0]
    render_share = t_render / (kgs["infer_ms"] / 1e3)
    # dense einsum vs segment_sum message passing (the measured reason for dense adjacency)
    g = sg.ntu_graph()
    dense = sg.graph_to_dense(g)
    h = jax.random.normal(jax.random.key(1), (a.batch, a.frames, 25, 64))
    t_dense = _time(jax.jit(lambda h: sg.graph_conv_dense(h, dense)), h, repeats=a.repeats)
    t_seg = _time(jax.jit(lambda h: sg.graph_conv_segment_sum(h, g)), h, repeats=a.repeats)
    print(f"batch {a.batch}, T {a.frames}, channels {ch}, grid {a.grid}, {jax.devices()[0]}")
    print(
        f"{'model':10s} {'params':>8s} {'infer seq/s':>12s} {'train seq/s':>12s} "
        f"{'GFLOP/seq':>10s} {'cost/ST-GCN':>12s}"
    )
    for r in rows:
        print(
            f"{r['model']:10s} {r['params']:8d} {r['infer_seq_per_s']:12.1f} "
            f"{r['train_seq_per_s']:12.1f} {r['gflops_per_seq']:10.4f} "
            f"{r['infer_cost_vs_st_gcn']:12.2f}"
        )
    print(f"renderer: {1e3 * t_render:.1f} ms = {100 * render_share:.0f}% of the KGS-GCN forward")
    print(
        f"graph conv: dense {1e3 * t_dense:.2f} ms vs segment_sum {1e3 * t_seg:.2f} ms "
        f"({t_seg / t_dense:.1f}x)"
    )
    out = {
        "args": vars(a),
        "models": rows,
        "render_ms": 1e3 * t_render,
        "render_share_of_kgs_forward": render_share,
        "dense_ms": 1e3 * t_dense,
        "segment_sum_ms": 1e3 * t_seg,
        "device": str(jax.devices()[0]),
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
