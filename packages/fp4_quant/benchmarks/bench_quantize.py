"""Benchmark: NVFP4 quantize throughput vs a plain copy, HCP overhead vs plain NVFP4 matmul,
packed memory vs bf16. Ratios are measured side by side in one run (medians of repeats).

    python packages/fp4_quant/benchmarks/bench_quantize.py --out /tmp/bench_fp4.json
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

import fp4_quant as fq


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/bench_fp4_quant.json")
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--cols", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--hcp-k", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()

    x = jax.random.normal(jax.random.key(0), (a.rows, a.cols))
    gb = x.size * 4 / 1e9
    copy = jax.jit(lambda x: -x)
    quant = jax.jit(lambda x: fq.nvfp4_quantize(x))
    fake = jax.jit(lambda x: fq.nvfp4_fake_quantize(x))
    t_copy, t_q, t_f = (_time(f, x, repeats=a.repeats) for f in (copy, quant, fake))

    xm = jax.random.normal(jax.random.key(1), (a.tokens, a.cols))
    w = 0.02 * jax.random.normal(jax.random.key(2), (a.cols, a.cols))
    ch = jnp.arange(a.hcp_k, dtype=jnp.int32)
    plain = jax.jit(lambda x, w: fq.quantized_matmul(x, w, recipe=fq.PLAIN_NVFP4))
    hcp = jax.jit(lambda x, w: fq.quantized_matmul(x, w, recipe=fq.PLAIN_NVFP4, hot_channels=ch))
    exact = jax.jit(lambda x, w: x @ w)
    t_plain, t_hcp, t_exact = (_time(f, xm, w, repeats=a.repeats) for f in (plain, hcp, exact))

    t = fq.nvfp4_quantize(x)
    res = {
        "shape": [a.rows, a.cols],
        "copy_gbps": gb / t_copy,
        "quantize_packed_gbps": gb / t_q,
        "fake_quantize_gbps": gb / t_f,
        "quantize_vs_copy": t_copy / t_q,
        "fake_quantize_vs_copy": t_copy / t_f,
        "matmul_shape": [a.tokens, a.cols, a.cols],
        "hcp_k": a.hcp_k,
        "f32_matmul_ms": t_exact * 1e3,
        "nvfp4_matmul_ms": t_plain * 1e3,
        "hcp_matmul_ms": t_hcp * 1e3,
        "hcp_overhead": t_hcp / t_plain - 1.0,
        "packed_bytes_vs_bf16": t.nbytes / (x.size * 2),
        "device": str(jax.devices()[0]),
    }
    print(f"{'metric':<28}{'value':>12}")
    for k, v in res.items():
        if isinstance(v, float):
            print(f"{k:<28}{v:>12.4f}")
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
