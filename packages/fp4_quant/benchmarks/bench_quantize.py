"""Benchmark: NVFP4 quantize throughput vs a plain copy, HCP overhead vs plain NVFP4 matmul,
packed memory vs bf16. Ratios are measured side by side in one run: the timed functions are
called round-robin (so load from other processes hits all of them alike) and both the median
wall time and the median process CPU time per call (all XLA threads) are reported; on a
shared machine the CPU-time ratio is the steadier one. `quantize_reference` is the
obviously-right formulation (the v1 path: block reshapes, f8 casts, arithmetic rounding).

    python packages/fp4_quant/benchmarks/bench_quantize.py --out /tmp/bench_fp4.json
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

import fp4_quant as fq
from fp4_quant._nvfp4 import nvfp4_parts


def _time(fns, *args, repeats: int) -> list[tuple[float, float]]:
    """(median wall s, median CPU s) per function, calls interleaved round-robin."""
    for fn in fns:
        jax.block_until_ready(fn(*args))
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(fn(*args))
            wall[i].append(time.perf_counter() - t0)
            cpu[i].append(time.process_time() - c0)
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(wall, cpu, strict=True)]


def _reference_quantize(x):
    q, bs, ts = nvfp4_parts(x, 1, "nearest", None)
    return fq.pack_e2m1(fq.e2m1_encode(q)), bs, ts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/bench_fp4_quant.json")
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--cols", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--hcp-k", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()

    x = jax.random.normal(jax.random.key(0), (a.rows, a.cols))
    gb = x.size * 4 / 1e9
    copy = jax.jit(lambda x: -x)
    quant = jax.jit(lambda x: fq.nvfp4_quantize(x))
    quant2d = jax.jit(lambda x: fq.nvfp4_quantize(x, block="16x16"))
    fake = jax.jit(lambda x: fq.nvfp4_fake_quantize(x))
    ref = jax.jit(_reference_quantize)
    (c, c_cpu), (q, q_cpu), (q2, q2_cpu), (f, f_cpu), (r, r_cpu) = _time(
        [copy, quant, quant2d, fake, ref], x, repeats=a.repeats
    )

    xm = jax.random.normal(jax.random.key(1), (a.tokens, a.cols))
    w = 0.02 * jax.random.normal(jax.random.key(2), (a.cols, a.cols))
    ch = jnp.arange(a.hcp_k, dtype=jnp.int32)
    plain = jax.jit(lambda x, w: fq.quantized_matmul(x, w, recipe=fq.PLAIN_NVFP4))
    hcp = jax.jit(lambda x, w: fq.quantized_matmul(x, w, recipe=fq.PLAIN_NVFP4, hot_channels=ch))
    exact = jax.jit(lambda x, w: x @ w)
    (t_plain, p_cpu), (t_hcp, h_cpu), (t_exact, _) = _time(
        [plain, hcp, exact], xm, w, repeats=max(3, a.repeats // 2)
    )

    t = fq.nvfp4_quantize(x)
    res = {
        "shape": [a.rows, a.cols],
        "copy_gbps": gb / c,
        "quantize_packed_gbps": gb / q,
        "quantize_vs_copy": c / q,
        "quantize_vs_copy_cpu": c_cpu / q_cpu,
        "quantize_16x16_vs_copy": c / q2,
        "quantize_16x16_vs_copy_cpu": c_cpu / q2_cpu,
        "fake_quantize_vs_copy": c / f,
        "fake_quantize_vs_copy_cpu": c_cpu / f_cpu,
        "quantize_reference_vs_copy": c / r,
        "quantize_reference_vs_copy_cpu": c_cpu / r_cpu,
        "matmul_shape": [a.tokens, a.cols, a.cols],
        "hcp_k": a.hcp_k,
        "f32_matmul_ms": t_exact * 1e3,
        "nvfp4_matmul_ms": t_plain * 1e3,
        "hcp_matmul_ms": t_hcp * 1e3,
        "hcp_overhead": t_hcp / t_plain - 1.0,
        "hcp_overhead_cpu": h_cpu / p_cpu - 1.0,
        "packed_bytes_vs_bf16": t.nbytes / (x.size * 2),
        "device": str(jax.devices()[0]),
    }
    print(f"{'metric':<32}{'value':>12}")
    for k, v in res.items():
        if isinstance(v, float):
            print(f"{k:<32}{v:>12.4f}")
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
