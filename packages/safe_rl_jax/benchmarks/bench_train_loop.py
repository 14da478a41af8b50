"""Environment steps per second of the complete compiled PPO-Lagrangian training loop.

    python packages/safe_rl_jax/benchmarks/bench_train_loop.py --out /tmp/bench_safe_rl.json

Compares, on the same task and budget: (a) the whole loop in one `lax.scan` (`trainer.run`)
vmapped over 4 seeds, (b) the same `lax.scan` loop for one seed, (c) a Python loop calling the
jitted single-iteration `trainer.step` (the baseline: host-driven training). Compilation is
excluded (timed separately).
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp

import safe_rl_jax as srl


def _time(f, *args, repeats=3):
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="/tmp/bench_safe_rl.json")
    p.add_argument("--task", default="point_goal_hazards")
    p.add_argument("--iterations", type=int, default=10)
    args = p.parse_args()
    env = srl.make_task(args.task)
    cfg = srl.PPOConfig(num_envs=16, hidden=(32, 32))
    tr = srl.make_trainer(env, srl.pid_lagrangian(), cfg)
    n = args.iterations
    steps = n * cfg.num_envs * env.episode_length
    st = tr.init(jax.random.key(0), 1.0)
    run = jax.jit(tr.run, static_argnums=1)
    t = time.perf_counter()
    jax.block_until_ready(run(st, n))
    compile_s = time.perf_counter() - t
    scan_s = _time(lambda s: run(s, n), st)
    states = jax.vmap(tr.init)(jax.random.split(jax.random.key(0), 4), jnp.ones(4))
    vrun = jax.jit(jax.vmap(lambda s: tr.run(s, n)))
    vmap_s = _time(vrun, states)
    step = jax.jit(tr.step)

    def loop(s):
        for _ in range(n):
            s, m = step(s)
        return s

    loop_s = _time(loop, st)
    rows = {
        "scan (1 seed)": steps / scan_s,
        "scan + vmap (4 seeds)": 4 * steps / vmap_s,
        "python loop of jitted step (baseline)": steps / loop_s,
    }
    print(
        f"task {args.task}, {cfg.num_envs} envs x {env.episode_length} steps x {n} iterations; "
        f"compile {compile_s:.1f} s"
    )
    print(f"{'variant':42s} {'env steps/s':>12s} {'vs baseline':>12s}")
    base = rows["python loop of jitted step (baseline)"]
    for k, v in rows.items():
        print(f"{k:42s} {v:12.0f} {v / base:12.2f}")
    with open(args.out, "w") as f:
        json.dump({"task": args.task, "compile_s": compile_s, "env_steps_per_s": rows}, f, indent=2)


if __name__ == "__main__":
    main()
