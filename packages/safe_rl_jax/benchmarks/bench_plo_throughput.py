"""Env steps/s of our compiled training loop vs brax's own PPO trainer, same brax env and budget.

    python packages/safe_rl_jax/benchmarks/bench_plo_throughput.py --out /tmp/bench_plo.json

Both train on brax's `inverted_pendulum` (`positional` backend: the cheapest real brax env to
compile on CPU) with the same budget and hyperparameters: `num_envs` environments, `unroll`
steps per environment per policy iteration, `minibatches` minibatches × `epochs` PPO epochs
per batch (minibatches of whole per-env unrolls, as brax), `iterations` policy iterations per
timed call, tanh MLPs `hidden` × 2 for the policy and the critic, learning rate 3e-4, discount
0.99, GAE λ 0.95, clip 0.2, no entropy bonus, gradient-norm clip 0.5, no observation
normalisation. Ours is `trainer.run` (one `lax.scan` over iterations, state donated) in its
DEFAULT configuration (`PPOConfig` defaults: separate reward and cost critics, minibatches of
whole per-env unrolls, critic once after the unroll) with a velocity cost on the cart
(`1[|cart velocity| > 1]`), the cost GAE and a multiplier controller (PID Lagrangian, and PLO,
which also computes the surrogate-gradient products, by default (`surrogate_batch="full"`)
from the whole batch, every `products_every` iterations; PLO with the other refresh periods
of `--products-every` is timed beside it, and with `--subsets` the other estimates, `"half"`
(the first half of the environments) and `"minibatch"` (the first minibatch's
environments), both cross-fitted between two halves); brax's is
`brax.training.agents.ppo.train` (reward only, its own `AutoResetWrapper`).

Interleaved timing: every trainer is compiled first; then, after each of brax's training
epochs (`iterations` policy iterations), brax's progress callback times one call of each of
ours. So shared-machine load hits both alike. Each timed call is measured in process CPU
seconds (the figure to trust on a shared machine) and wall seconds; brax's CPU time is the
process CPU time between two callbacks (its epoch plus its small host-side bookkeeping), its
wall time is from its own `training/sps`. brax's first two epochs are skipped (compilation;
on jax 0.10 its pmapped epoch recompiles on the second call). Reported: median and min–max
over `repeats` of env steps per CPU second and per wall second, and the median of the
per-repeat ratios ours / brax. `--ablate` also times PLO with the `jacrev` reference for its
gradient products and PID with one shared two-head critic; `--default-learner` the session-5
default learner (minibatches of shuffled single transitions, critic inside the unroll).
`--pure-jax` instead times one `small`-preset setting of the PLO experiment (point-goal, 16
envs × 100 steps × 40 iterations, one seed and limit) including compilation.
"""

import argparse
import functools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp

import safe_rl_jax as srl

HYPER = dict(learning_rate=3e-4, discount=0.99, gae_lambda=0.95, clip_eps=0.2, max_grad_norm=0.5)


def pin_cpus(n: int) -> list[int]:
    """Restrict this process (and XLA's thread pool, created lazily) to `n` of its CPUs."""
    cpus = sorted(os.sched_getaffinity(0))[:n]
    os.sched_setaffinity(0, cpus)
    return cpus


def _brax_env():
    from brax import envs

    return envs.get_environment("inverted_pendulum", backend="positional")


def make_ours(controller, args, **overrides):
    """A compiled, donated `run` and its state; returns `timed()` -> (cpu s, wall s)."""
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
        entropy_coef=0.0,
        hidden=(args.hidden, args.hidden),
        **{**HYPER, **overrides},
    )
    tr = srl.make_trainer(env, controller, cfg)
    run = jax.jit(tr.run, static_argnums=1, donate_argnums=0)
    # distinct buffers (init may alias equal constants), so the whole state can be donated
    box = [jax.tree.map(jnp.copy, tr.init(jax.random.key(0), 5.0))]

    def timed():
        c, t = time.process_time(), time.perf_counter()
        box[0], m = run(box[0], args.iterations)
        jax.block_until_ready((box[0], m))
        return time.process_time() - c, time.perf_counter() - t

    compile_cpu = timed()[0]
    return timed, compile_cpu


def brax_ppo(args, callbacks):
    """Train brax's PPO; after each epoch past the second, call every `callbacks` entry."""
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo
    from jax._src import api as jax_api

    # brax 0.14.2's trainer still calls `jax.device_put_replicated`, whose public alias jax
    # 0.10 removed; the implementation is still there, so restore the alias for brax only.
    if not hasattr(jax, "device_put_replicated"):
        jax.device_put_replicated = jax_api.device_put_replicated

    steps = args.iterations * args.num_envs * args.unroll
    epochs = 2 + args.repeats
    brax, ours, clock = [], {name: [] for name in callbacks}, {"n": 0, "last": 0.0}

    def progress(step, metrics):
        now = time.process_time()
        clock["n"] += 1
        if clock["n"] >= 3:  # epochs 1 and 2 compile; from epoch 3 on, pair brax with ours
            brax.append((now - clock["last"], steps / float(metrics["training/sps"])))
            for name, timed in callbacks.items():
                ours[name].append(timed())
        clock["last"] = time.process_time()

    ppo.train(
        _brax_env(),
        num_timesteps=epochs * steps,
        num_evals=epochs + 1,
        run_evals=False,
        num_envs=args.num_envs,
        episode_length=1000,
        unroll_length=args.unroll,
        batch_size=args.num_envs // args.minibatches,
        num_minibatches=args.minibatches,
        num_updates_per_batch=args.epochs,
        learning_rate=HYPER["learning_rate"],
        discounting=HYPER["discount"],
        gae_lambda=HYPER["gae_lambda"],
        clipping_epsilon=HYPER["clip_eps"],
        max_grad_norm=HYPER["max_grad_norm"],
        entropy_cost=0.0,
        normalize_observations=False,
        network_factory=functools.partial(
            ppo_networks.make_ppo_networks,
            policy_hidden_layer_sizes=(args.hidden, args.hidden),
            value_hidden_layer_sizes=(args.hidden, args.hidden),
            activation=jnp.tanh,
            distribution_type="normal",
        ),
        progress_fn=progress,
        seed=0,
    )
    return brax, ours


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


def _summary(times, steps, base=None):
    """Median and min–max env steps/s per CPU and per wall second (+ paired ratio vs base)."""
    out = {}
    for i, clock in enumerate(("cpu", "wall")):
        sps = [steps / t[i] for t in times]
        out[clock] = {"median": statistics.median(sps), "min": min(sps), "max": max(sps)}
        if base is not None:
            ratios = [b[i] / t[i] for t, b in zip(times, base, strict=True)]
            out[clock]["ratio_median"] = statistics.median(ratios)
            out[clock]["ratio_min"], out[clock]["ratio_max"] = min(ratios), max(ratios)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="/tmp/bench_plo.json")
    p.add_argument("--num-envs", type=int, default=32)
    p.add_argument("--unroll", type=int, default=64)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--repeats", type=int, default=7, help="paired timed epochs")
    p.add_argument(
        "--default-learner",
        action="store_true",
        help="also time the session-5 default learner (transition minibatches, per-step values)",
    )
    p.add_argument("--pure-jax", action="store_true", help="time one small-preset setting")
    p.add_argument(
        "--products-every",
        type=int,
        nargs="*",
        default=[1, 2, 4],
        help="also time PLO with its products refreshed every k iterations (k != the default)",
    )
    p.add_argument(
        "--subsets", action="store_true", help="also time PLO's half and minibatch products"
    )
    p.add_argument(
        "--cost-hidden",
        type=int,
        default=0,
        help="> 0: also time PID and PLO with a cost critic of this width (PPOConfig.cost_hidden)",
    )
    p.add_argument(
        "--ablate", action="store_true", help="also time PLO (jacrev) and PID (shared critic)"
    )
    p.add_argument(
        "--cpus",
        type=int,
        default=1,
        help="brax comparison: pin the process to this many CPUs before JAX starts (0: none)",
    )
    args = p.parse_args()
    if args.pure_jax:
        wall, steps = pure_jax_setting()
        print(f"one small-preset PLO setting (point-goal, {steps} env steps): {wall:.1f} s wall")
        with open(args.out, "w") as f:
            json.dump({"pure_jax_setting_s": wall, "env_steps": steps}, f, indent=2)
        return
    # pinned only for the brax comparison (the pure-JAX target is for both cores)
    cpus = pin_cpus(args.cpus) if args.cpus > 0 else sorted(os.sched_getaffinity(0))
    load_start = os.getloadavg()[0]
    steps = args.iterations * args.num_envs * args.unroll
    callbacks, compile_cpu = {}, {}
    variants = [("ours, PID Lagrangian", srl.pid_lagrangian(), {})]
    variants.append(("ours, PLO", srl.plo(horizon=5), {}))
    # PLO with its products refreshed every k iterations (reused in between), k != default
    for every in args.products_every:
        if every != srl.PPOConfig().products_every:
            over = {"products_every": every}
            variants.append((f"ours, PLO, products every {every}", srl.plo(horizon=5), over))
    if args.cost_hidden:  # both controllers with a narrower cost critic (opt-in learner)
        over = {"cost_hidden": (args.cost_hidden, args.cost_hidden)}
        for name, ctrl in (("PID", srl.pid_lagrangian()), ("PLO", srl.plo(horizon=5))):
            variants.append((f"ours, {name}, cost critic {args.cost_hidden}x2", ctrl, over))
    # PLO with the other estimates of its gradient products (whole batch, first half of the
    # environments cross-fitted, one minibatch's environments cross-fitted)
    for other in ("full", "half", "minibatch") if args.subsets else ():
        if other != srl.PPOConfig().surrogate_batch:
            variants.append(
                (f"ours, PLO, {other} products", srl.plo(horizon=5), {"surrogate_batch": other})
            )
    if args.ablate:
        jac = {"surrogate_gradients": "jacrev"}
        variants.append(("ours, PLO, jacrev grads", srl.plo(horizon=5), jac))
        variants.append(("ours, PID, shared critic", srl.pid_lagrangian(), {"shared_critic": True}))
    if args.default_learner:
        old = {"shuffle": "transitions", "batched_values": False, "surrogate_gradients": "jacrev"}
        variants.append(("ours, PID, session-5 default", srl.pid_lagrangian(), old))
    for name, ctrl, over in variants:
        callbacks[name], compile_cpu[name] = make_ours(ctrl, args, **over)
    brax, ours = brax_ppo(args, callbacks)
    results = {"brax ppo.train": _summary(brax, steps)}
    for name, times in ours.items():
        results[name] = _summary(times, steps, base=brax)
    print(
        f"inverted_pendulum (positional): {args.num_envs} envs x {args.unroll} steps x "
        f"{args.iterations} iterations per timed call, {args.minibatches} minibatches x "
        f"{args.epochs} epochs, MLP {args.hidden}x2; {args.repeats} paired repeats; "
        f"CPUs {cpus}, load average {load_start:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'trainer':28s} {'steps/CPU-s (min-max)':>26s} {'vs brax, CPU':>16s} "
        f"{'steps/wall-s':>13s} {'vs brax, wall':>14s}"
    )
    for name, r in results.items():
        c, w = r["cpu"], r["wall"]
        ratio = (
            f"{c['ratio_median']:.2f} ({c['ratio_min']:.2f}-{c['ratio_max']:.2f})"
            if "ratio_median" in c
            else "1.00"
        )
        wratio = f"{w['ratio_median']:.2f}" if "ratio_median" in w else "1.00"
        print(
            f"{name:28s} {c['median']:9.0f} ({c['min']:6.0f}-{c['max']:6.0f}) "
            f"{ratio:>16s} {w['median']:13.0f} {wratio:>14s}"
        )
    with open(args.out, "w") as f:
        json.dump(
            {
                "env": "inverted_pendulum/positional",
                "cpus": cpus,
                "load_average_start_end": (load_start, os.getloadavg()[0]),
                "budget": vars(args),
                "hyperparameters": HYPER,
                "env_steps_per_s": results,
                "compile_cpu_s": compile_cpu,
                "raw_seconds_cpu_wall": {"brax ppo.train": brax, **ours},
            },
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()
