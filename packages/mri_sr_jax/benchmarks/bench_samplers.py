"""Sampling time per slice (DDPM vs DDIM vs probability-flow ODE) and train-step time
(single device vs data-parallel over simulated CPU devices) for the MoEDiff-SR model.

    python packages/mri_sr_jax/benchmarks/bench_samplers.py --out /tmp/bench_mri_sr.json

Times are medians of repeats after one compile; the network is freshly initialised (time does
not depend on the weights). Quality at matched steps, on a denoiser trained over the whole
noise schedule, is measured by bench_matched_quality.py.
"""

import argparse
import json
import os
import time

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import mri_sr_jax as msr  # noqa: E402


def median_time(fn, *args, repeats=3):
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/bench_mri_sr.json")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ddpm-steps", type=int, default=100)
    args = ap.parse_args()
    model = msr.init_fast(lambda: msr.MoEDiffSR(1, patch_sizes=(4, 8, 16), rngs=nnx.Rngs(0)))
    gd, params = nnx.split(model)
    sch = msr.cosine_schedule()
    cond = jnp.ones((1, args.size, args.size, 1)) * 0.5
    rows = []
    for sampler, steps, nfe in (
        ("ddpm", args.ddpm_steps, args.ddpm_steps),
        ("ddim", 10, 10),
        ("ode", 5, 9),
    ):
        fn = jax.jit(
            lambda p, c, k, s=sampler, n=steps: msr.sample_residual(
                gd, p, c, key=k, schedule=sch, sampler=s, num_steps=n
            )
        )
        t = median_time(fn, params, cond, jax.random.key(0))
        rows.append({"what": f"sample {sampler} ({steps} steps, {nfe} NFE)", "seconds": t})
    ddpm_t = rows[0]["seconds"]
    for r in rows:
        r["speedup_vs_ddpm"] = ddpm_t / r["seconds"]

    batch = msr.make_batch(jnp.ones((8, 32, 32)), jnp.ones((8, 32, 32)) * 0.9)

    def loss(m, b, k):
        return msr.moe_loss(m, b, k, schedule=sch)

    for label, mesh in (
        ("train step, 1 device", None),
        (
            f"train step, {len(jax.devices())} devices",
            jax.make_mesh((len(jax.devices()),), ("data",)),
        ),
    ):
        tr = msr.make_trainer(gd, loss, optax.adam(1e-3), mesh=mesh)
        state = tr.init(jax.tree.map(jnp.copy, params))
        state, _ = tr.update(state, batch, jax.random.key(0))
        jax.block_until_ready(state)
        ts = []
        for i in range(5):
            t0 = time.perf_counter()
            state, m = tr.update(state, batch, jax.random.key(i))
            jax.block_until_ready(m)
            ts.append(time.perf_counter() - t0)
        rows.append({"what": label, "seconds": float(np.median(ts))})
    print(f"{'what':40s} {'seconds':>10s} {'x vs DDPM':>10s}")
    for r in rows:
        sp = f"{r['speedup_vs_ddpm']:.1f}" if "speedup_vs_ddpm" in r else ""
        print(f"{r['what']:40s} {r['seconds']:10.4f} {sp:>10s}")
    with open(args.out, "w") as f:
        json.dump({"size": args.size, "rows": rows, "devices": len(jax.devices())}, f, indent=2)


if __name__ == "__main__":
    main()
