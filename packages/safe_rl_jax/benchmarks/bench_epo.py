"""EPO's performance-critical path: the worst-violation search and the exchange loop.

    python packages/safe_rl_jax/benchmarks/bench_epo.py --out /tmp/bench_epo.json

(1) Share of one EPO outer iteration spent in the worst-violation search (check rollouts +
grid sweep + multi-start gradient ascent), issue target <= 20%: the search alone and a whole
iteration are jitted separately and timed (best of `--repeats`, compile excluded).
(2) EPO (working set of `--capacity` slots) vs the dense fixed grid (`--dense` constraints)
on SprayField, each its own compiled program over `--seeds` vmapped seeds: wall time to reach
a common violation level, the larger of the two methods' final median max-violations
("equal final violation"); target: EPO faster.
Every time is given twice: wall (`time.perf_counter`) and process CPU time
(`time.process_time`, all threads, user + sys), the steadier number on a shared machine.
"""

import argparse
import json
import time

import jax
import numpy as np

import safe_rl_jax as srl


def _best(f, *args, repeats):
    """(wall s, CPU s) of one call, each the best of `repeats` (compile excluded)."""
    jax.block_until_ready(f(*args))
    wall = cpu = float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(f(*args))
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu


def _program(env, ppo, cfg, mode, seeds):
    init, iteration, trainer = srl.make_epo(env, srl.lagrangian(0.5), ppo, cfg)
    keys = jax.random.split(jax.random.key(0), seeds)
    state = jax.vmap(lambda k: init(k, mode))(keys)
    return state, jax.jit(jax.vmap(iteration)), trainer


def _max_violation(env, trainer, params, key, grid_points):
    traj = srl.record_rollouts(env, trainer.graphdef, params, key=key, num_episodes=64)
    v = srl.violation_fn(env, traj)
    _, vals = srl.worst_violations(
        v, env.index_set, grid_points=grid_points, num_starts=4, steps=10, step_size=0.002
    )
    return vals[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="/tmp/bench_epo.json")
    p.add_argument("--capacity", type=int, default=16)
    p.add_argument("--dense", type=int, default=64)
    p.add_argument("--outer", type=int, default=12)
    p.add_argument("--inner", type=int, default=5)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    env = srl.SprayField()
    ppo = srl.PPOConfig(
        num_envs=16,
        learning_rate=2e-3,
        hidden=(32, 32),
        decay_iterations=a.outer * a.inner,
        cost_advantage_scale="shared",
    )
    cfg = srl.EPOConfig(capacity=a.capacity, eta=0.1, inner_iterations=a.inner, separation=0.1)

    # (1) search share of one iteration (one seed).
    state, step, trainer = _program(env, ppo, cfg, srl.EPO, 1)
    one = jax.tree.map(lambda x: x[0], state)

    def search(st):
        key = jax.random.wrap_key_data(st.key)
        traj = srl.record_rollouts(
            env, trainer.graphdef, st.train.params, key=key, num_episodes=cfg.check_episodes
        )
        return srl.worst_violations(
            srl.violation_fn(env, traj),
            env.index_set,
            grid_points=cfg.grid_points,
            num_starts=cfg.num_starts,
            steps=cfg.ascent_steps,
            step_size=cfg.ascent_step_size,
            separation=cfg.separation,
        )

    iteration = jax.jit(srl.make_epo(env, srl.lagrangian(0.5), ppo, cfg)[1])
    t_search = _best(jax.jit(search), one, repeats=a.repeats)
    t_iter = _best(iteration, one, repeats=a.repeats)

    # (2) EPO vs dense grid, each alone, time to a common violation level.
    check = jax.jit(
        jax.vmap(lambda prm, k: _max_violation(env, trainer, prm, k, 256), in_axes=(0, None))
    )
    curves = {}
    for name, mode, cap in (("epo", srl.EPO, a.capacity), ("dense_grid", srl.FIXED_GRID, a.dense)):
        st, stp, _ = _program(env, ppo, cfg._replace(capacity=cap), mode, a.seeds)
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(stp(st))  # compile (and discard)
        compile_s, compile_cpu = time.perf_counter() - t, time.process_time() - c
        elapsed, cpu, viol = 0.0, 0.0, []
        for _ in range(a.outer):
            t, c = time.perf_counter(), time.process_time()
            st, _ = stp(st)
            jax.block_until_ready(st)
            elapsed += time.perf_counter() - t
            cpu += time.process_time() - c
            v = float(np.median(np.asarray(check(st.train.params, jax.random.key(7)))))
            viol.append((elapsed, v, cpu))  # (wall s, violation, CPU s) after each outer
        curves[name] = {"compile_s": compile_s, "compile_cpu_s": compile_cpu, "curve": viol}
    level = max(min(p[1] for p in c["curve"][-3:]) for c in curves.values())

    def time_to(curve, col=0):
        return next((p[col] for p in curve if p[1] <= level), float("nan"))

    rows = {
        "search_s": t_search[0],
        "iteration_s": t_iter[0],
        "search_share": t_search[0] / t_iter[0],
        "search_cpu_s": t_search[1],
        "iteration_cpu_s": t_iter[1],
        "search_share_cpu": t_search[1] / t_iter[1],
        "violation_level": level,
        **{
            f"{n}_{k}": val
            for n, c in curves.items()
            for k, val in (
                ("s_per_outer", c["curve"][-1][0] / a.outer),
                ("cpu_s_per_outer", c["curve"][-1][2] / a.outer),
                ("time_to_level_s", time_to(c["curve"])),
                ("cpu_time_to_level_s", time_to(c["curve"], 2)),
                ("final_violation", c["curve"][-1][1]),
                ("compile_s", c["compile_s"]),
                ("compile_cpu_s", c["compile_cpu_s"]),
            )
        },
    }
    rows["epo_speedup_to_level"] = rows["dense_grid_time_to_level_s"] / rows["epo_time_to_level_s"]
    rows["epo_speedup_to_level_cpu"] = (
        rows["dense_grid_cpu_time_to_level_s"] / rows["epo_cpu_time_to_level_s"]
    )
    print(f"{'quantity':<34}{'value':>12}")
    for k, v in rows.items():
        print(f"{k:<34}{v:>12.4f}")
    with open(a.out, "w") as f:
        json.dump({"args": vars(a), "results": rows, "curves": curves}, f, indent=1)


if __name__ == "__main__":
    main()
