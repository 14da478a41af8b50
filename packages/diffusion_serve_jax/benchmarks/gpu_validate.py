"""Validate and time the cache-gather attention Pallas kernel on a GPU (compiled).

    python packages/diffusion_serve_jax/benchmarks/gpu_validate.py --out /tmp/cache_attn_gpu.json

For each shape: the kernel (`interpret=False`) against `cache_attention_reference` on fresh
random inputs with random keep/valid masks (relative L2 error, f32), with the output of an
earlier call poisoned (NaN-filled buffers are not reused, so a NaN means an unwritten row);
then medians of kernel vs the jitted reference. Exits non-zero if any check fails or raises.
Without a GPU it refuses unless `--interpret` is given (small shapes, interpret mode).
"""

import argparse
import json
import statistics
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from diffusion_serve_jax import cache_attention, cache_attention_reference


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _inputs(key, b, m, n, h, d, keep_frac):
    ks = jax.random.split(key, 8)
    q, kn, vn = (jax.random.normal(ks[i], (b, m, h, d)) for i in range(3))
    kc, vc = (jax.random.normal(ks[3 + i], (b, n, h, d)) for i in range(2))
    keep = (jax.random.uniform(ks[5], (b, n)) < keep_frac).astype(jnp.float32)
    valid = (jax.random.uniform(ks[6], (b, m)) < 0.9).astype(jnp.float32).at[:, 0].set(1.0)
    return q, kc, vc, keep, kn, vn, valid


def check(b, m, n, h, d, block_n, block_m, interpret, repeats) -> dict:
    row = {"shape_BMNHD": [b, m, n, h, d], "block_n": block_n, "block_m": block_m}
    try:
        args = _inputs(jax.random.key(b + m + n + h + d), b, m, n, h, d, keep_frac=0.7)
        kernel = jax.jit(
            lambda *a: cache_attention(*a, block_n=block_n, block_m=block_m, interpret=interpret)
        )
        ref = jax.jit(cache_attention_reference)
        got, want = np.asarray(kernel(*args), np.float64), np.asarray(ref(*args), np.float64)
        # fresh inputs for a second check: the same function on any valid input
        args2 = _inputs(jax.random.key(99 + n), b, m, n, h, d, keep_frac=0.3)
        got2, want2 = (np.asarray(f(*args2), np.float64) for f in (kernel, ref))
        rel = max(
            np.linalg.norm(got - want) / np.linalg.norm(want),
            np.linalg.norm(got2 - want2) / np.linalg.norm(want2),
        )
        finite = bool(np.isfinite(got).all() and np.isfinite(got2).all())
        row |= {"rel_l2_error": float(rel), "all_finite": finite, "ok": bool(finite and rel < 1e-3)}
        t_k, t_r = _time(kernel, *args, repeats=repeats), _time(ref, *args, repeats=repeats)
        row |= {"kernel_ms": t_k * 1e3, "reference_ms": t_r * 1e3, "speedup": t_r / t_k}
    except Exception as e:  # report and go on: one call should show every shape's fate
        row |= {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
        traceback.print_exc()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/cache_attn_gpu.json")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--interpret", action="store_true", help="dry run without a GPU")
    a = ap.parse_args()
    platform = jax.devices()[0].platform
    if platform != "gpu" and not a.interpret:
        sys.exit(f"gpu_validate: needs a GPU (found {platform}); use --interpret for a dry run")
    if a.interpret:
        shapes, repeats = [(2, 16, 64, 2, 16, 16, None), (2, 32, 64, 2, 16, 16, 16)], 2
    else:  # (B, M masked, N cached, H, D, block_n, block_m): the editing model's, SD-sized
        shapes = [
            (8, 16, 64, 4, 32, 16, None),
            (8, 256, 4096, 16, 64, 64, None),
            (8, 256, 4096, 16, 64, 64, 64),
            (4, 1024, 4096, 16, 64, 64, 64),
            (4, 1024, 4096, 16, 64, 128, 128),
        ]
        repeats = a.repeats
    rows = [check(*s, a.interpret, repeats) for s in shapes]
    for r in rows:
        print(json.dumps(r))
    with open(a.out, "w") as f:
        json.dump(
            {"device": str(jax.devices()[0]), "jax": jax.__version__, "results": rows}, f, indent=2
        )
    bad = [r for r in rows if not r["ok"]]
    if bad:
        sys.exit(f"gpu_validate: {len(bad)} cache-attention check(s) FAILED")
    print(f"gpu_validate: all {len(rows)} cache-attention checks passed on {jax.devices()[0]}")


if __name__ == "__main__":
    main()
