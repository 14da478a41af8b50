"""Validate and time the Pallas kernels on a GPU (compiled, interpret=False).

    python packages/fp4_quant/benchmarks/gpu_validate.py --out /tmp/fp4_gpu_validate.json

For each shape: (1) the fused quantize kernel against `nvfp4_quantize_reference` (codes, block
scales and tensor scale must be identical) for 1x16 and 16x16 blocks, including NaN/inf/zero
blocks; (2) the HCP-patched GEMM kernel against `hcp_matmul_reference` (allclose) and against
`quantized_matmul` with the same hot channels; then times kernel vs the jnp fast path vs the
reference (medians). Exits non-zero if any check fails. Without a GPU it refuses to run unless
`--interpret` is given (a dry run of the same checks in interpret mode, small shapes only).
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

import fp4_quant as fq


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _poisoned(key, rows: int, cols: int) -> jax.Array:
    x = np.asarray(jax.random.normal(key, (rows, cols))) * 20.0
    x[0, 3], x[1, 17], x[2, 40 % cols] = np.nan, np.inf, -np.inf
    x[3, :16], x[4, 16:32] = 0.0, 1e-30
    return jnp.asarray(x)


def check_quantize(rows, cols, tile_rows, tile_cols, interpret, repeats) -> list[dict]:
    out = []
    for block_rows in (1, 16):
        x = _poisoned(jax.random.key(rows + cols + block_rows), rows, cols)
        kernel = jax.jit(
            lambda x, br=block_rows: fq.nvfp4_quantize_pallas(
                x, block_rows=br, tile_rows=tile_rows, tile_cols=tile_cols, interpret=interpret
            )
        )
        ref = jax.jit(lambda x, br=block_rows: fq.nvfp4_quantize_reference(x, block_rows=br))
        block = "16x16" if block_rows == 16 else "1x16"
        fast = jax.jit(lambda x, b=block: fq.nvfp4_quantize(x, block=b))
        got, want = kernel(x), ref(x)
        ok = (
            np.array_equal(np.asarray(got.codes), np.asarray(want.codes))
            and np.array_equal(
                np.asarray(got.block_scale.astype(jnp.float32)),
                np.asarray(want.block_scale.astype(jnp.float32)),
                equal_nan=True,
            )
            and float(got.tensor_scale) == float(want.tensor_scale)
        )
        clean = jax.random.normal(jax.random.key(7), (rows, cols))
        gb = clean.size * 4 / 1e9
        t_k, t_f, t_r = (_time(f, clean, repeats=repeats) for f in (kernel, fast, ref))
        t_copy = _time(jax.jit(lambda x: -x), clean, repeats=repeats)
        out.append(
            {
                "kernel": "nvfp4_quantize_pallas",
                "shape": [rows, cols],
                "block": block,
                "tiles": [tile_rows, tile_cols],
                "matches_reference": bool(ok),
                "kernel_gbps": gb / t_k,
                "jnp_fast_gbps": gb / t_f,
                "reference_gbps": gb / t_r,
                "copy_gbps": gb / t_copy,
            }
        )
    return out


def check_hcp(m, k, n, k_hot, tile_m, tile_n, tile_k, interpret, repeats) -> dict:
    kx, kw, kc = jax.random.split(jax.random.key(m + k + n), 3)
    ch = jax.random.choice(kc, k, (k_hot,), replace=False).astype(jnp.int32)
    x = jax.random.normal(kx, (m, k)).at[:, ch].multiply(40.0)
    w = 0.05 * jax.random.normal(kw, (k, n))
    xt, wt = fq.nvfp4_quantize(x), fq.nvfp4_quantize(w.T, block="16x16")
    xq, wq = fq.nvfp4_dequantize(xt), fq.nvfp4_dequantize(wt).T
    x_patch = jnp.concatenate([(x - xq)[:, ch], xq[:, ch]], 1)
    w_patch = jnp.concatenate([wq[ch], (w - wq)[ch]], 0).T
    kernel = jax.jit(
        lambda *a: fq.hcp_matmul_pallas(
            *a, tile_m=tile_m, tile_n=tile_n, tile_k=tile_k, interpret=interpret
        )
    )
    ref = jax.jit(fq.hcp_matmul_reference)
    args = (xt, wt, x_patch, w_patch)
    got, want = np.asarray(kernel(*args)), np.asarray(ref(*args))
    recipe = fq.MatmulRecipe("nvfp4", weight_2d=True, sr_grad=False, rht_wgrad=False)
    y = np.asarray(fq.quantized_matmul(x, w, recipe=recipe, hot_channels=ch))
    scale = np.abs(want).max()
    ok = np.allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    ok = ok and np.allclose(got, y, rtol=1e-4, atol=1e-4 * scale)
    plain = jax.jit(lambda x, w: fq.quantized_matmul(x, w, recipe=recipe))
    t_k, t_r = (_time(f, *args, repeats=repeats) for f in (kernel, ref))
    t_plain = _time(plain, x, w, repeats=repeats)
    return {
        "kernel": "hcp_matmul_pallas",
        "shape": [m, k, n],
        "hot_channels": k_hot,
        "tiles": [tile_m, tile_n, tile_k],
        "matches_reference": bool(ok),
        "max_abs_err_vs_reference": float(np.abs(got - want).max()),
        "kernel_ms": t_k * 1e3,
        "reference_ms": t_r * 1e3,
        "jnp_nvfp4_matmul_ms": t_plain * 1e3,
    }


def _guard(check, name, *args) -> list[dict]:
    """Run one check; a lowering or runtime error becomes a failed row (one call shows all)."""
    try:
        out = check(*args)
        return out if isinstance(out, list) else [out]
    except Exception as e:
        traceback.print_exc()
        return [
            {
                "kernel": name,
                "args": list(args[:-2]),
                "matches_reference": False,
                "error": f"{type(e).__name__}: {e}"[:2000],
            }
        ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/fp4_gpu_validate.json")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--interpret", action="store_true", help="dry run without a GPU")
    a = ap.parse_args()
    platform = jax.devices()[0].platform
    if platform != "gpu" and not a.interpret:
        sys.exit(f"gpu_validate: needs a GPU (found {platform}); use --interpret for a dry run")
    if a.interpret:
        q_shapes = [(32, 64, 16, 32)]
        h_shapes = [(32, 64, 32, 4, 16, 16, 32)]
        repeats = 2
    else:
        q_shapes = [(256, 512, 16, 128), (4096, 4096, 32, 256), (8192, 8192, 64, 256)]
        q_shapes += [(8192, 8192, 128, 512), (8192, 8192, 256, 256), (8192, 8192, 32, 1024)]
        h_shapes = [(512, 512, 512, 16, 64, 64, 64), (4096, 4096, 4096, 16, 128, 128, 64)]
        h_shapes += [(4096, 4096, 4096, 16, 64, 64, 128)]
        repeats = a.repeats
    results = []
    for rows, cols, tr, tc in q_shapes:
        results += _guard(
            check_quantize, "nvfp4_quantize_pallas", rows, cols, tr, tc, a.interpret, repeats
        )
    for shape in h_shapes:
        results += _guard(check_hcp, "hcp_matmul_pallas", *shape, a.interpret, repeats)
    for r in results:
        print(json.dumps(r))
    with open(a.out, "w") as f:
        json.dump(
            {"device": str(jax.devices()[0]), "jax": jax.__version__, "results": results},
            f,
            indent=2,
        )
    bad = [r for r in results if not r["matches_reference"]]
    if bad:
        sys.exit(f"gpu_validate: {len(bad)} kernel check(s) FAILED")
    print(f"gpu_validate: all {len(results)} checks passed on {jax.devices()[0]}")


if __name__ == "__main__":
    main()
