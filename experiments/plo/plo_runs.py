"""Run every (method x limit x seed) setting of one task in one compiled, vmapped program."""

import itertools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

import safe_rl_jax as srl
import xplib

CONTROLLERS = {
    "plo": lambda c: srl.plo(
        horizon=c.plo_horizon,
        q_over=c.plo_q_over,
        q_under=c.plo_q_under,
        r=c.plo_r,
        effort=c.plo_effort,
    ),
    "pid": lambda c: srl.pid_lagrangian(),
    "lagrangian": lambda c: srl.lagrangian(c.lagrangian_lr),
}


def settings(config, task):
    """The flat list of (method, limit, seed) runs of one task."""
    return list(itertools.product(config.methods, config.limits[task], range(config.num_seeds)))


def make_env(config, task):
    """A pure-JAX task by name, or `brax_<name>`: a brax velocity task (needs brax)."""
    if task.startswith("brax_"):
        return srl.brax_velocity_task(
            task.removeprefix("brax_"),
            episode_length=config.brax_episode_length,
            backend=config.brax_backend,
        )
    return srl.make_task(task)


def run_task(config, task, workdir):
    """Train all settings of `task`; returns (settings, metrics as numpy [iters, runs, ...])."""
    env = make_env(config, task)
    ppo = srl.PPOConfig(
        num_envs=config.num_envs,
        num_epochs=config.num_epochs,
        num_minibatches=config.num_minibatches,
        learning_rate=config.learning_rate,
        hidden=tuple(config.hidden),
        shared_critic=config.shared_critic,
        cost_hidden=tuple(config.cost_hidden) or None,
        shuffle=config.shuffle,
        batched_values=config.batched_values,
        surrogate_batch=config.surrogate_batch,
        products_every=config.products_every,
    )
    controller = srl.switch([CONTROLLERS[m](config) for m in config.methods])
    trainer = srl.make_trainer(env, controller, ppo)
    runs = settings(config, task)
    seed_keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
    keys = jnp.stack([jax.random.key_data(seed_keys[s]) for _, _, s in runs])
    limits = jnp.array([lim for _, lim, _ in runs], jnp.float32)
    which = jnp.array([config.methods.index(m) for m, _, _ in runs], jnp.int32)

    def init(key, limit, w):
        st = trainer.init(key, limit)
        return st._replace(ctrl_state=srl.choose(st.ctrl_state, w))

    state = jax.vmap(init)(keys, limits, which)
    n_chunks = config.iterations // config.chunk
    history = {
        "episode_return": np.zeros((config.iterations, len(runs)), np.float32),
        "episode_cost": np.zeros((config.iterations, len(runs)), np.float32),
        "lam": np.zeros((config.iterations, len(runs)), np.float32),
    }
    mngr = xplib.checkpoint_manager(pathlib.Path(workdir) / task)
    done = 0
    if mngr.latest_step() is not None:
        target = {"state": jax.eval_shape(lambda: state), "history": history}
        restored = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(target))
        state, history = (
            restored["state"],
            {k: np.asarray(v) for k, v in restored["history"].items()},
        )
        done = mngr.latest_step()
    run_chunk = jax.jit(jax.vmap(lambda s: trainer.run(s, config.chunk)))
    logger = xplib.MetricLogger(workdir)
    for c in xplib.progress(range(done, n_chunks), total=n_chunks - done, desc=task):
        state, m = run_chunk(state)
        sl = slice(c * config.chunk, (c + 1) * config.chunk)
        history["episode_return"][sl] = np.asarray(m["episode_return"]).T
        history["episode_cost"][sl] = np.asarray(m["episode_cost"])[..., 0].T
        history["lam"][sl] = np.asarray(m["lam"])[..., 0].T
        mngr.save(c + 1, args=ocp.args.StandardSave({"state": state, "history": history}))
        mngr.wait_until_finished()
        for mi, method in enumerate(config.methods):
            sel = which == mi
            logger.log(
                (c + 1) * config.chunk,
                task=task,
                method=method,
                cost=float(np.median(history["episode_cost"][sl][-1, np.asarray(sel)])),
                ret=float(np.median(history["episode_return"][sl][-1, np.asarray(sel)])),
            )
    mngr.close()
    return runs, history
