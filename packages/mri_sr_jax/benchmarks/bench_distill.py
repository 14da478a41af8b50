"""Sampling time and peak memory per slice: guided teacher vs distilled student, one run.

    python packages/mri_sr_jax/benchmarks/bench_distill.py --out /tmp/bench_distill.json

Untrained weights (time and memory do not depend on their values). Teacher: GuidedUNet
(16, 32, 64) with DDIM `--teacher-steps`; student: multi-scale GuidedUNet (8, 16, 32) at the
teacher's steps halved `--halvings` times. Peak memory is XLA's compiled memory analysis of the
whole sampler (arguments + outputs + temporaries - aliased), the figure a device must provide.
Medians of `--repeats` timed calls after one warm-up call, as wall time and as process CPU
time (all XLA threads; the robust figure on a shared machine).
"""

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import mri_sr_jax as msr


def build(widths, emb, multiscale, seed):
    net = msr.init_fast(
        lambda: msr.GuidedUNet(3, widths, emb, multiscale_cond=multiscale, rngs=nnx.Rngs(0)),
        seed=seed,
    )
    return nnx.split(net) + (msr.count_params(net),)


def measure(gd, params, cond, steps, repeats):
    sch = msr.cosine_schedule()
    fn = jax.jit(lambda p, c, k: msr.sample_sr(gd, p, c, key=k, schedule=sch, num_steps=steps))
    key = jax.random.key(0)
    compiled = fn.lower(params, cond, key).compile()
    mem = compiled.memory_analysis()
    peak = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        + mem.temp_size_in_bytes
        - mem.alias_size_in_bytes
    )
    jax.block_until_ready(compiled(params, cond, key))
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(params, cond, key))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    b = cond.shape[0]
    return float(np.median(times)) / b, float(np.median(cpu)) / b, int(peak)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--teacher-steps", type=int, default=8)
    ap.add_argument("--halvings", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="/tmp/bench_distill.json")
    args = ap.parse_args()
    cond = jax.random.normal(jax.random.key(1), (args.batch, args.size, args.size, 3))
    t_gd, t_p, t_n = build((16, 32, 64), 32, False, 0)
    s_gd, s_p, s_n = build((8, 16, 32), 16, True, 1)
    shape = (1, args.size, args.size, 1)
    rows = []
    t_sec, t_cpu, t_mem = measure(t_gd, t_p, cond, args.teacher_steps, args.repeats)
    t_flops = msr.forward_cost(t_gd, t_p, shape, 3)["flops"] * args.teacher_steps
    rows.append(("teacher", t_n, args.teacher_steps, t_flops, t_sec, t_cpu, t_mem))
    for h in range(args.halvings + 1):
        steps = args.teacher_steps // 2**h
        sec, cpu, mem = measure(s_gd, s_p, cond, steps, args.repeats)
        flops = msr.forward_cost(s_gd, s_p, shape, 3)["flops"] * steps
        rows.append((f"student ({steps} steps)", s_n, steps, flops, sec, cpu, mem))
    header = (
        "model",
        "params",
        "steps",
        "GFLOP/slice",
        "wall s/slice",
        "wall ratio",
        "CPU s/slice",
        "CPU ratio",
        "peak MiB",
        "mem ratio",
    )
    print(" | ".join(header))
    out = []
    for name, n, steps, flops, sec, cpu, mem in rows:
        rec = {
            "model": name,
            "params": n,
            "steps": steps,
            "gflop_per_slice": flops / 1e9,
            "seconds_per_slice": sec,
            "time_ratio_teacher_over_this": t_sec / sec,
            "cpu_seconds_per_slice": cpu,
            "cpu_ratio_teacher_over_this": t_cpu / cpu,
            "peak_bytes": mem,
            "memory_ratio_teacher_over_this": t_mem / mem,
        }
        out.append(rec)
        print(
            f"{name} | {n} | {steps} | {flops / 1e9:.3f} | {sec:.4f} | {t_sec / sec:.2f} | "
            f"{cpu:.4f} | {t_cpu / cpu:.2f} | "
            f"{mem / 2**20:.2f} | {t_mem / mem:.2f}"
        )
    meta = {"args": vars(args), "jax": jax.__version__, "backend": jax.default_backend()}
    pathlib.Path(args.out).write_text(json.dumps({"rows": out, "meta": meta}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing
    main()
