"""Generalised advantage estimation for reward and (vector) cost channels."""

import jax
import jax.numpy as jnp
import numpy as np

from ._types import Array, Float


def gae(
    rewards: Float[Array | np.ndarray, "time ..."],
    values: Float[Array | np.ndarray, "time ..."],
    bootstrap_value: Float[Array | np.ndarray, "..."],
    termination: Float[Array | np.ndarray, "time ..."],
    *,
    discount: float | Float[Array, ""],
    lambda_: float | Float[Array, ""],
) -> tuple[Float[Array, "time ..."], Float[Array, "time ..."]]:
    """GAE(λ) with `lax.scan` over time; trailing axes (envs, costs) are carried along.

    `termination[t] = 1` ends the episode at step t (no bootstrap past it); the last step is a
    time-limit truncation that bootstraps from `bootstrap_value`. Returns `(targets,
    advantages)` with `targets = advantages + values` (same convention as brax's `compute_gae`
    with no truncation flags).
    """
    next_values = jnp.concatenate([values[1:], bootstrap_value[None]], axis=0)
    not_term = 1.0 - termination
    deltas = rewards + discount * not_term * next_values - values

    def backward(acc, xs):
        delta, nt = xs
        acc = delta + discount * lambda_ * nt * acc
        return acc, acc

    _, adv = jax.lax.scan(
        backward, jnp.zeros_like(bootstrap_value), (deltas, not_term), reverse=True
    )
    return adv + values, adv


def gae_reference(rewards, values, bootstrap_value, termination, *, discount, lambda_):
    """Plain NumPy loop twin of `gae` (float64), used by the tests."""
    r, v, term = (np.asarray(a, np.float64) for a in (rewards, values, termination))
    boot = np.asarray(bootstrap_value, np.float64)
    adv = np.zeros_like(r)
    acc = np.zeros_like(boot)
    for t in reversed(range(r.shape[0])):
        nxt = boot if t == r.shape[0] - 1 else v[t + 1]
        delta = r[t] + discount * (1 - term[t]) * nxt - v[t]
        acc = delta + discount * lambda_ * (1 - term[t]) * acc
        adv[t] = acc
    return adv + v, adv
