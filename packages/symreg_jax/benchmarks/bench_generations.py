"""Generations per second of the full GESR loop vs plain GP (the BERT overhead as a ratio).

    python packages/symreg_jax/benchmarks/bench_generations.py [--pop 256] [--points 100]
        [--generations 20] [--dim 16] [--depth 1] [--out F]

Two guided engines, each switched on or off at run time (as in the experiment): the shipped
variant (`GPConfig(screen=4, screen_mutation=False)`, `GESRRegressor`'s default: each
crossover the best of 4 candidates by the crossover BERT, uniform point mutations) and the
session-4 variant (`screen=1`: both edits sampled from the BERTs). A random target that is
never solved (so every generation runs), 2 variables, 32-token expressions, the 8 default
operators, constants optimised every 10 generations. Each mode is timed (wall and CPU
seconds of this process) as the median of `--repeats` runs of `--generations` generations
from the same initial population, interleaved; plain GP is the shipped engine switched off
(bit for bit the plain-GP engine).
"""

import argparse
import dataclasses
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
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (args.points, 2)).astype(np.float32)
    y = rng.normal(size=args.points).astype(np.float32)
    variants = {"shipped": dict(screen=4, screen_mutation=False), "screen=1": dict(screen=1)}
    runs, compile_s, state = {}, {}, None
    for name, kw in variants.items():
        eng = sr.make_engine(pset, dataclasses.replace(cfg, **kw), mgd, cgd)
        state = jax.jit(eng.init)(x, y, key=jax.random.key(0))  # the same for both
        t0 = time.process_time()
        runs[name] = (
            jax.jit(eng.run).lower(state, x, y, (mst, cst, True), args.generations).compile()
        )
        compile_s[name] = time.process_time() - t0
    modes = {  # mode -> (engine, guides on)
        "plain GP": ("shipped", False),
        "GESR shipped (screen=4, crossover)": ("shipped", True),
        "GESR screen=1 (both BERTs sample)": ("screen=1", True),
    }
    times = {m: ([], []) for m in modes}
    for _ in range(args.repeats):
        for mode, (eng_name, on) in modes.items():
            t0, c0 = time.perf_counter(), time.process_time()
            out = jax.block_until_ready(
                runs[eng_name](state, x, y, (mst, cst, on), args.generations)
            )
            times[mode][0].append(time.perf_counter() - t0)
            times[mode][1].append(time.process_time() - c0)
            assert int(out.generation) == args.generations
    rows = []
    for mode, (ts, cs) in times.items():
        secs = statistics.median(ts) / args.generations
        cpu = statistics.median(cs) / args.generations
        rows.append(
            {
                "mode": mode,
                "seconds_per_generation": secs,
                "cpu_seconds_per_generation": cpu,
                "generations_per_s": 1 / secs,
            }
        )
    for r in rows:
        r["overhead_wall"] = r["seconds_per_generation"] / rows[0]["seconds_per_generation"]
        r["overhead_cpu"] = r["cpu_seconds_per_generation"] / rows[0]["cpu_seconds_per_generation"]
    print(
        f"pop {args.pop}, points {args.points}, {args.generations} generations x "
        f"{args.repeats} repeats, BERT dim {args.dim} depth {args.depth}; "
        f"compile CPU s {', '.join(f'{k} {v:.1f}' for k, v in compile_s.items())}"
    )
    print(
        f"{'mode':36s} {'s/gen':>8s} {'CPU s/gen':>10s} {'gen/s':>7s} "
        f"{'overhead wall':>14s} {'overhead CPU':>13s}"
    )
    for r in rows:
        print(
            f"{r['mode']:36s} {r['seconds_per_generation']:8.4f} "
            f"{r['cpu_seconds_per_generation']:10.4f} {r['generations_per_s']:7.1f} "
            f"{r['overhead_wall']:13.2f}x {r['overhead_cpu']:12.2f}x"
        )
    with open(args.out, "w") as f:
        json.dump(vars(args) | {"rows": rows, "compile_cpu_s": compile_s}, f, indent=2)


if __name__ == "__main__":
    main()
