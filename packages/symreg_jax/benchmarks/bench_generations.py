"""Generations per second of the full GESR loop vs plain GP (the BERT overhead as a ratio).

    python packages/symreg_jax/benchmarks/bench_generations.py [--pop 256] [--points 100]
        [--generations 20] [--dim 16] [--depth 1] [--out F]

One compiled engine (the guides are switched on or off at run time, as in the experiment), a
random target that is never solved (so every generation runs), 2 variables, 32-token
expressions, the experiment's 8 operators. Each mode is timed as the median of `--repeats`
runs of `--generations` generations from the same initial population, interleaved.
"""

import argparse
import json
import statistics
import time

import jax
import numpy as np
from flax import nnx

import symreg_jax as sr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pop", type=int, default=256)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--generations", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--out", default="/tmp/bench_symreg_generations.json")
    args = ap.parse_args()
    pset = sr.PrimitiveSet(n_vars=2, max_len=32)
    cfg = sr.GPConfig(population_size=args.pop, const_every=10)
    mm = sr.MutationModel(pset, dim=args.dim, depth=args.depth, heads=2, rngs=nnx.Rngs(0))
    cm = sr.CrossoverModel(pset, dim=args.dim, depth=args.depth, heads=2, rngs=nnx.Rngs(1))
    (mgd, mst), (cgd, cst) = nnx.split(mm), nnx.split(cm)
    eng = sr.make_engine(pset, cfg, mgd, cgd)
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (args.points, 2)).astype(np.float32)
    y = rng.normal(size=args.points).astype(np.float32)
    state = jax.jit(eng.init)(x, y, key=jax.random.key(0))
    t0 = time.perf_counter()
    run = jax.jit(eng.run).lower(state, x, y, (mst, cst, True), args.generations).compile()
    compile_s = time.perf_counter() - t0
    times = {"plain GP": [], "GESR (both BERTs)": []}
    for _ in range(args.repeats):
        for name in times:
            t0 = time.perf_counter()
            out = jax.block_until_ready(
                run(state, x, y, (mst, cst, name != "plain GP"), args.generations)
            )
            times[name].append(time.perf_counter() - t0)
            assert int(out.generation) == args.generations
    rows = []
    for name, ts in times.items():
        secs = statistics.median(ts) / args.generations
        rows.append({"mode": name, "seconds_per_generation": secs, "generations_per_s": 1 / secs})
    overhead = rows[1]["seconds_per_generation"] / rows[0]["seconds_per_generation"]
    print(
        f"pop {args.pop}, points {args.points}, {args.generations} generations x "
        f"{args.repeats} repeats, BERT dim {args.dim} depth {args.depth}; "
        f"compile {compile_s:.1f} s"
    )
    print(f"{'mode':20s} {'s/generation':>13s} {'generations/s':>14s}")
    for r in rows:
        print(f"{r['mode']:20s} {r['seconds_per_generation']:13.4f} {r['generations_per_s']:14.1f}")
    print(f"BERT overhead (GESR / GP seconds per generation): {overhead:.2f}x")
    with open(args.out, "w") as f:
        json.dump(vars(args) | {"rows": rows, "overhead": overhead}, f, indent=2)


if __name__ == "__main__":
    main()
