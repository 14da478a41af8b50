"""Evaluator throughput (node-evaluations per second) vs a per-operator-select stack machine.

    python packages/symreg_jax/benchmarks/bench_evaluate.py [--pop 4096] [--points 1000] [--out F]

Both evaluate the same random population (full trees, depth 4, 32-token arrays) on the same
points; each is compiled ahead of time (`jit(...).lower(...).compile()`, not timed), then timed
as the median of `--repeats` calls (default 1: the 4096 x 1000 case once, ~30-60 s on 2 cores).
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import symreg_jax as sr
from symreg_jax._primitives import OPERATORS


def stack_machine(pset):
    """The straightforward baseline: `lax.scan` over reversed prefix tokens with an explicit
    stack per expression, `lax.switch` over token kinds (a select over all of them under vmap)."""
    ar = pset.arity_table()

    def one(tokens, consts, inputs):
        length, points = tokens.shape[0], inputs.shape[0]
        xt = inputs.T

        def branches():
            out = [lambda a, b, c, t: a]  # padding: no-op value
            for name in pset.operators:
                op = OPERATORS[name]
                if op.arity == 1:
                    out.append(lambda a, b, c, t, op=op: op.fn(jnp, a))
                else:
                    out.append(lambda a, b, c, t, op=op: op.fn(jnp, a, b))
            for v in range(pset.n_vars):
                out.append(lambda a, b, c, t, v=v: xt[v])
            out.append(lambda a, b, c, t: jnp.full((points,), c, inputs.dtype))
            return out

        br = branches()

        def step(carry, inp):
            stack, sp = carry
            tok, c = inp
            a = stack[jnp.maximum(sp - 1, 0)]
            b = stack[jnp.maximum(sp - 2, 0)]
            val = jax.lax.switch(tok, br, a, b, c, tok)
            new_sp = jnp.where(tok == pset.pad, sp, sp + 1 - ar[tok])
            stack = jnp.where(tok == pset.pad, stack, stack.at[new_sp - 1].set(val))
            return (stack, new_sp), None

        stack0 = jnp.zeros((length, points), inputs.dtype)
        (stack, _), _ = jax.lax.scan(step, (stack0, jnp.int32(0)), (tokens, consts), reverse=True)
        return stack[0]

    return jax.vmap(one, in_axes=(0, 0, None))


def _time(fn, args, repeats):
    """(median wall seconds, median CPU seconds of this process, output) of `repeats` calls
    of an ahead-of-time compiled `fn`. CPU seconds stay meaningful on a shared machine."""
    compiled = fn.lower(*args).compile()
    ts, cs = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(compiled(*args))
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    return statistics.median(ts), statistics.median(cs), np.asarray(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pop", type=int, default=4096)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--unroll", action="store_true", help="also time ours with unroll=4")
    ap.add_argument("--out", default="/tmp/bench_symreg_evaluate.json")
    args = ap.parse_args()
    pset = sr.PrimitiveSet(n_vars=2, max_len=32)  # +, -, *, /, sin, cos, exp, log
    tokens, consts = sr.random_trees(jax.random.key(0), pset, args.pop, max_depth=4, full=True)
    x = jnp.asarray(np.random.default_rng(0).uniform(-2, 2, (args.points, 2)), jnp.float32)
    nodes = int(sr.expression_length(tokens, pset).sum()) * args.points
    impls = {
        "stack machine (switch)": jax.jit(stack_machine(pset)),
        "ours (scan)": jax.jit(lambda t, c, x: sr.evaluate_population(t, c, x, pset)),
    }
    if args.unroll:
        impls["ours (scan, unroll=4)"] = jax.jit(
            lambda t, c, x: sr.evaluate_population(t, c, x, pset, unroll=4)
        )
    rows, ref = [], None
    for name, fn in impls.items():
        secs, cpu, out = _time(fn, (tokens, consts, x), args.repeats)
        ref = out if ref is None else ref
        # Fraction of values equal to the baseline's within 1e-3: float32 chaos (sin of huge
        # arguments, nested exp) makes a few ill-conditioned expressions differ in any order
        # of evaluation.
        ok = float(np.mean(np.isclose(out, ref, rtol=1e-3, atol=1e-3, equal_nan=True)))
        rows.append(
            {
                "impl": name,
                "seconds": secs,
                "cpu_seconds": cpu,
                "gnode_evals_per_s": nodes / secs / 1e9,
                "gnode_evals_per_cpu_s": nodes / cpu / 1e9,
                "match_fraction": ok,
            }
        )
    base, base_cpu = rows[0]["seconds"], rows[0]["cpu_seconds"]
    print(f"pop {args.pop}, points {args.points}, {nodes / 1e6:.1f} M node-evaluations")
    print(
        f"{'impl':24s} {'wall s':>8s} {'cpu s':>8s} {'Gnode/s':>8s} {'Gnode/cpu-s':>11s} "
        f"{'speedup':>8s} {'cpu spd':>8s} {'match':>7s}"
    )
    for r in rows:
        r["speedup"] = base / r["seconds"]
        r["cpu_speedup"] = base_cpu / r["cpu_seconds"]
        print(
            f"{r['impl']:24s} {r['seconds']:8.3f} {r['cpu_seconds']:8.3f} "
            f"{r['gnode_evals_per_s']:8.3f} {r['gnode_evals_per_cpu_s']:11.3f} "
            f"{r['speedup']:8.2f} {r['cpu_speedup']:8.2f} {r['match_fraction']:7.4f}"
        )
    with open(args.out, "w") as f:
        json.dump(
            {"pop": args.pop, "points": args.points, "nodes": nodes, "rows": rows}, f, indent=2
        )


if __name__ == "__main__":
    main()
