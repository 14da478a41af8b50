"""Env steps/s of our compiled training loop vs brax's own PPO trainer, same brax env and budget.

    python packages/safe_rl_jax/benchmarks/bench_plo_throughput.py --out /tmp/bench_plo.json

Both train on brax's `inverted_pendulum` (`positional` backend: the cheapest real brax env to
compile on CPU, ~12 s for a 10-step unroll) with the same budget: `num_envs` environments,
`unroll` steps per environment per policy iteration, `minibatches` minibatches, `epochs` PPO
epochs per batch, `iterations` policy iterations, and the same network sizes (tanh MLPs).
Ours is `trainer.run` (one `lax.scan` over iterations) with a velocity cost on the cart
(`1[|cart velocity| > 1]`), reward and cost critics, a multiplier controller (PID Lagrangian,
and PLO, which also takes one `jacrev` of the surrogates per iteration); brax's is
`brax.training.agents.ppo.train` (reward only, its own `AutoResetWrapper`). Compile time is
excluded from env steps/s for both and reported separately. Steady state = the fastest of
`repeats` calls after the first: ours = `run` called again on the same shapes; brax = its
later training epochs, timed by its own `training/sps` metric (on jax 0.10 brax's pmapped
epoch recompiles on its second call, so that epoch is slow too; all epoch times are printed).
Compile = first call − steady call. Ours counts every simulated step (one episode of
`unroll` steps per env per iteration; steps after a termination are masked out of the loss),
brax auto-resets. The default run takes about 2–4 minutes of CPU on 2 cores, dominated by
compilation (brax compiles its epoch twice). `--pure-jax` instead times one `small`-preset
setting of the PLO experiment (point-goal, 16 envs × 100 steps × 40 iterations, one seed and
limit) including compilation.
"""

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp

import safe_rl_jax as srl


def _brax_env():
    from brax import envs

    return envs.get_environment("inverted_pendulum", backend="positional")


def ours(controller, args):
    env = srl.BraxVelocity(
        _brax_env(),
        velocity_limit=1.0,
        episode_length=args.unroll,
        speed_fn=lambda prev, nxt: jnp.abs(nxt.pipeline_state.qd[0]),
    )
    cfg = srl.PPOConfig(
        num_envs=args.num_envs,
        num_epochs=args.epochs,
        num_minibatches=args.minibatches,
        learning_rate=3e-4,
        hidden=(args.hidden, args.hidden),
    )
    tr = srl.make_trainer(env, controller, cfg)
    state = tr.init(jax.random.key(0), 5.0)
    run = jax.jit(tr.run, static_argnums=1)
    t = time.perf_counter()
    jax.block_until_ready(run(state, args.iterations))
    first = time.perf_counter() - t
    steady = float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        jax.block_until_ready(run(state, args.iterations))
        steady = min(steady, time.perf_counter() - t)
    return steady, first - steady


def brax_ppo(args):
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo
    from jax._src import api as jax_api

    # brax 0.14.2's trainer still calls `jax.device_put_replicated`, whose public alias jax
    # 0.10 removed; the implementation is still there, so restore the alias for brax only.
    if not hasattr(jax, "device_put_replicated"):
        jax.device_put_replicated = jax_api.device_put_replicated

    steps_per_iteration = args.num_envs * args.unroll
    sps = []
    t = time.perf_counter()
    ppo.train(
        _brax_env(),
        # 1 + repeats training epochs of `iterations` training steps each
        # (num_evals = epochs + 1).
        num_timesteps=(1 + args.repeats) * args.iterations * steps_per_iteration,
        num_evals=2 + args.repeats,
        run_evals=False,
        num_envs=args.num_envs,
        episode_length=1000,
        unroll_length=args.unroll,
        batch_size=args.num_envs // args.minibatches,
        num_minibatches=args.minibatches,
        num_updates_per_batch=args.epochs,
        learning_rate=3e-4,
        network_factory=functools.partial(
            ppo_networks.make_ppo_networks,
            policy_hidden_layer_sizes=(args.hidden, args.hidden),
            value_hidden_layer_sizes=(args.hidden, args.hidden),
            activation=jnp.tanh,
            distribution_type="normal",
        ),
        progress_fn=lambda step, m: sps.append(float(m["training/sps"])),
        seed=0,
    )
    total = time.perf_counter() - t
    steps = args.iterations * steps_per_iteration
    first = steps / sps[0]
    # Steady state: the fastest later epoch (on jax 0.10 brax's pmapped epoch can recompile
    # on its second call, when its inputs come back with a different sharding).
    steady = min(steps / x for x in sps[1:])
    print("brax epoch seconds:", [round(steps / x, 1) for x in sps])
    return steady, first - steady, total


def pure_jax_setting():
    """Wall time (compile included) of one setting of the PLO experiment's `small` preset."""
    env = srl.make_task("point_goal_hazards")
    cfg = srl.PPOConfig(num_envs=16, learning_rate=2e-3, hidden=(32, 32))
    tr = srl.make_trainer(env, srl.plo(horizon=5), cfg)
    t = time.perf_counter()
    state = tr.init(jax.random.key(0), 1.0)
    _, m = jax.jit(tr.run, static_argnums=1)(state, 40)
    jax.block_until_ready(m)
    return time.perf_counter() - t, 40 * 16 * env.episode_length


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="/tmp/bench_plo.json")
    p.add_argument("--num-envs", type=int, default=32)
    p.add_argument("--unroll", type=int, default=64)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="timed calls after the first")
    p.add_argument("--skip-plo", action="store_true", help="time only the PID learner")
    p.add_argument("--only-brax", action="store_true", help="time only brax's trainer")
    p.add_argument("--pure-jax", action="store_true", help="time one small-preset setting")
    args = p.parse_args()
    if args.pure_jax:
        wall, steps = pure_jax_setting()
        print(f"one small-preset PLO setting (point-goal, {steps} env steps): {wall:.1f} s wall")
        with open(args.out, "w") as f:
            json.dump({"pure_jax_setting_s": wall, "env_steps": steps}, f, indent=2)
        return
    steps = args.iterations * args.num_envs * args.unroll
    results = {}
    brax_s, brax_compile, brax_total = brax_ppo(args)
    results["brax ppo.train"] = (steps / brax_s, brax_compile)
    if not args.only_brax:
        pid_s, pid_compile = ours(srl.pid_lagrangian(), args)
        results["ours, PID Lagrangian"] = (steps / pid_s, pid_compile)
    if not (args.skip_plo or args.only_brax):
        plo_s, plo_compile = ours(srl.plo(horizon=5), args)
        results["ours, PLO"] = (steps / plo_s, plo_compile)
    base = results["brax ppo.train"][0]
    print(
        f"inverted_pendulum (positional): {args.num_envs} envs x {args.unroll} steps x "
        f"{args.iterations} iterations, {args.minibatches} minibatches x {args.epochs} epochs, "
        f"MLP {args.hidden}x2"
    )
    print(f"{'trainer':24s} {'env steps/s':>12s} {'vs brax':>8s} {'compile s':>10s}")
    for k, (sps, comp) in results.items():
        print(f"{k:24s} {sps:12.0f} {sps / base:8.2f} {comp:10.1f}")
    with open(args.out, "w") as f:
        json.dump(
            {
                "env": "inverted_pendulum/positional",
                "budget": vars(args),
                "env_steps_per_s": {k: v[0] for k, v in results.items()},
                "compile_s": {k: v[1] for k, v in results.items()},
                "ratio_vs_brax": {k: v[0] / base for k, v in results.items()},
            },
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()
