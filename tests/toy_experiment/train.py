"""Least squares by gradient descent (method) vs the closed form (baseline); resumable."""

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
import orbax.checkpoint as ocp

import xplib


def train_and_evaluate(config, workdir):
    if config.fail:
        raise RuntimeError("toy experiment asked to fail")
    kx, kw = jax.random.split(jax.random.key(config.seed))
    x = jax.random.normal(kx, (64, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.01 * jax.random.normal(kw, (64,))
    opt = optax.sgd(config.learning_rate)

    def loss(w):
        return jnp.mean((x @ w - y) ** 2)

    @jax.jit
    def step(state):
        w, opt_state = state
        g = jax.grad(loss)(w)
        updates, opt_state = opt.update(g, opt_state)
        return optax.apply_updates(w, updates), opt_state

    state = (jnp.zeros(3), opt.init(jnp.zeros(3)))
    mngr = xplib.checkpoint_manager(workdir)
    start = 0
    if mngr.latest_step() is not None:
        start = mngr.latest_step()
        state = mngr.restore(start, args=ocp.args.StandardRestore(state))
    logger = xplib.MetricLogger(workdir)
    for i in xplib.progress(range(start, config.steps), desc="toy"):
        state = step(state)
        logger.log(i + 1, loss=loss(state[0]))
        mngr.save(i + 1, args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()
    w_closed = jnp.linalg.lstsq(x, y)[0]
    rows = logger.read()
    fig, ax = plt.subplots()
    ax.semilogy([r["step"] for r in rows], [r["loss"] for r in rows])
    fig_name = xplib.save_figure(fig, workdir, "loss")
    np.save(f"{workdir}/w.npy", np.asarray(state[0]))
    xplib.write_results(
        workdir,
        experiment="toy",
        paper=PAPER_NAME,
        preset=config.preset,
        claims=[
            xplib.Claim(
                "GD reaches the least-squares loss",
                "mse",
                float(loss(state[0])),
                float(loss(w_closed)),
                "n/a",
                baseline_name="closed form",
                better="lower",
            )
        ],
        tables=[xplib.Table("weights", ["method", "w0"], [["gd", float(state[0][0])]])],
        figures=[fig_name],
        extra={"resumed_from": start},
    )


PAPER_NAME = "Toy linear regression (tests only)"
