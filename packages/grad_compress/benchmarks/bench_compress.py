"""Benchmark: compressor overhead vs step compute, bytes per step, subsampled entropy cost.

    python packages/grad_compress/benchmarks/bench_compress.py [--out /tmp/bench_compress.json]

Model: a 4-block GPT-like stack of dense matrices (width 256: qkv 256x768, proj 256x256,
fc 256x1024, out 1024x256) trained on 2048 tokens per step; "step compute" is its jitted forward +
backward on one device. Each compressor's `update` (single worker, so compress + decompress +
error feedback, no collective) is timed in the same run; medians of repeats.
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

import grad_compress as gc

WIDTH, BLOCKS, TOKENS = 256, 4, 2048


def make_params(key):
    shapes = []
    for _ in range(BLOCKS):
        shapes += [(WIDTH, 3 * WIDTH), (WIDTH, WIDTH), (WIDTH, 4 * WIDTH), (4 * WIDTH, WIDTH)]
        shapes += [(WIDTH,)] * 4
    keys = jax.random.split(key, len(shapes))
    return [jax.random.normal(k, s) * 0.02 for k, s in zip(keys, shapes, strict=True)]


def loss(params, x):
    h = x
    for b in range(BLOCKS):
        qkv, proj, fc, out, b1, b2, b3, b4 = params[8 * b : 8 * b + 8]
        a = jnp.tanh(h @ qkv)[:, :WIDTH] @ proj + b1[None, :]
        h = h + a
        h = h + jax.nn.gelu(h @ fc) @ out + b2[None, :] + b3[None, :] * b4[None, :]
    return jnp.mean(h**2)


def timeit(fn, *args, repeats=7):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/bench_compress.json")
    args = ap.parse_args()
    params = make_params(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (TOKENS, WIDTH))
    step = jax.jit(jax.grad(loss))
    t_step = timeit(step, params, x)
    grads = step(params, x)
    full_bytes = sum(g.size * 4 for g in grads)
    rows = []
    comps = {
        "none": gc.no_compression(),
        "powersgd r=1": gc.powersgd(1),
        "powersgd r=4": gc.powersgd(4),
        "edgc (r<=8)": gc.edgc(init_rank=4, max_rank=8),
        "topk 1%": gc.topk(0.01),
        "ef-signsgd": gc.sign_sgd(),
        "qsgd int8": gc.qsgd(),
    }
    for name, comp in comps.items():
        state = comp.init(params)
        upd = jax.jit(lambda g, s, k, comp=comp: comp.update(g, s, key=k))
        key = jax.random.key(2)
        t = timeit(upd, grads, state, key)
        _, _, stats = upd(grads, state, key)
        rows.append(
            {
                "compressor": name,
                "overhead_ms": 1e3 * t,
                "overhead_vs_step": t / t_step,
                "bytes": float(stats.total_bytes),
                "bytes_vs_none": float(stats.total_bytes) / full_bytes,
            }
        )
    # entropy: full vs 5% subsample, fixed bins
    big = [
        jax.random.laplace(jax.random.key(3), (1024, 4096)),
        jax.random.normal(jax.random.key(4), (4096, 1024)),
    ]
    scale = float(jnp.std(big[0]))
    lo, hi = -4 * scale, 4 * scale
    full = jax.jit(
        lambda t: gc.uniform_histogram_entropy(gc.subsample(t, fraction=1.0, key=None), lo, hi, 256)
    )
    sub = jax.jit(
        lambda t, k: gc.uniform_histogram_entropy(
            gc.subsample(t, fraction=0.05, key=k), lo, hi, 256
        )
    )
    blk = jax.jit(
        lambda t, k: gc.uniform_histogram_entropy(
            gc.subsample(t, fraction=0.05, key=k, block=256), lo, hi, 256
        )
    )
    t_full = timeit(full, big)
    h_full = float(full(big))
    entropy = {"full_ms": 1e3 * t_full, "elements": sum(b.size for b in big), "fraction": 0.05}
    for name, fn in (("random entries", sub), ("blocks of 256", blk)):
        t = timeit(fn, big, jax.random.key(5))
        errs = [abs(float(fn(big, jax.random.key(s))) - h_full) for s in range(5)]
        entropy[name] = {"ms": 1e3 * t, "saving": 1 - t / t_full, "max_abs_error_bits": max(errs)}
    print(
        f"step compute (fwd+bwd, {TOKENS} tokens): {1e3 * t_step:.2f} ms; "
        f"full gradient {full_bytes} B"
    )
    print(f"{'compressor':<14} {'overhead ms':>12} {'vs step':>8} {'bytes':>10} {'vs none':>8}")
    for r in rows:
        print(
            f"{r['compressor']:<14} {r['overhead_ms']:>12.2f} {r['overhead_vs_step']:>8.3f} "
            f"{r['bytes']:>10.0f} {r['bytes_vs_none']:>8.4f}"
        )
    print(f"entropy over {entropy['elements']} entries: full {t_full * 1e3:.2f} ms")
    for name in ("random entries", "blocks of 256"):
        e = entropy[name]
        print(
            f"  5% subsample, {name}: {e['ms']:.2f} ms ({100 * e['saving']:.1f}% cheaper), "
            f"max |error| {e['max_abs_error_bits']:.4f} bits"
        )
    result = {
        "step_ms": 1e3 * t_step,
        "full_bytes": full_bytes,
        "compressors": rows,
        "entropy": entropy,
        "device": jax.devices()[0].device_kind,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
