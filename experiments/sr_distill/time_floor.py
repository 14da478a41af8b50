"""CPU time per slice of the 1-step sampler for the teacher and smaller students (untrained).

    python experiments/sr_distill/time_floor.py

Sampling time does not depend on the weights, so untrained networks show how far a smaller
`GuidedUNet` student can get below the teacher at equal steps: `distill_lib.timed` as the
experiment uses it, the `small` evaluation batch shape (11 slices of 64x64, 3 conditioning
channels), DDIM 1 step; per network the median of 3 repeats of `timed(..., repeats=5)`,
process CPU time (all threads) per slice. The last row is the sampler with no network.
"""

import distill_lib as lib
import jax
import numpy as np
from flax import nnx

import mri_sr_jax as msr

# name: (widths, emb_dim, multiscale_cond); the first is the `small` teacher
NETS = {
    "teacher (12, 24, 48), emb 32": ((12, 24, 48), 32, False),
    "student (6, 12, 24), emb 16": ((6, 12, 24), 16, True),
    "(4, 8, 16), emb 8": ((4, 8, 16), 8, True),
    "(3, 6, 12), emb 8": ((3, 6, 12), 8, True),
    "(4, 8), emb 8": ((4, 8), 8, True),
    "(2,), emb 4": ((2,), 4, False),
}


def cpu_per_slice(fn, *args, n):
    return float(np.median([lib.timed(fn, *args, repeats=5)[2] / n for _ in range(3)]))


def main():
    schedule = msr.make_schedule("cosine")
    cond = jax.random.normal(jax.random.key(0), (11, 64, 64, 3))
    key = jax.random.key(1)
    print("| network | params | MFLOP / call | CPU s / slice | teacher / this |")
    print("|---|---|---|---|---|")
    base = None
    for name, (widths, emb, multiscale) in NETS.items():
        net = msr.init_fast(
            lambda w=widths, e=emb, m=multiscale: msr.GuidedUNet(
                3, w, e, multiscale_cond=m, rngs=nnx.Rngs(0)
            )
        )
        gd, params = nnx.split(net)
        fn = jax.jit(
            lambda p, c, k, gd=gd: msr.sample_sr(
                gd, p, c, key=k, schedule=schedule, num_steps=1, residual_scale=0.1
            )
        )
        sec = cpu_per_slice(fn, params, cond, key, n=cond.shape[0])
        base = base or sec
        mflop = msr.forward_cost(gd, params, (1, 64, 64, 1), 3)["flops"] / 1e6
        print(f"| {name} | {msr.count_params(net)} | {mflop:.1f} | {sec:.5f} | {base / sec:.2f}x |")
    no_net = jax.jit(
        lambda c, k: msr.ddim_sample(
            lambda x, ab: 0.5 * x,
            c.shape[:-1] + (1,),
            schedule,
            key=k,
            num_steps=1,
            parameterisation="v",
        )
    )
    sec = cpu_per_slice(no_net, cond, key, n=cond.shape[0])
    print(f"| sampler, no network | 0 | 0 | {sec:.5f} | {base / sec:.2f}x |")


if __name__ == "__main__":
    main()
