"""Variance-preserving noise schedules in continuous time t in [0, 1].

A schedule is a NamedTuple of pure functions of t: `alpha_bar(t)` (signal fraction of variance)
and its log-derivative. Discrete DDPM schedules are `alpha_bar` evaluated on the grid i / T, so
one trained network serves the discrete samplers (DDPM, DDIM) and the probability-flow ODE.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp

from ._types import Array, Float

_AB_MIN = 1e-6


class Schedule(NamedTuple):
    """`alpha_bar(t)`; `dlog_alpha_bar(t)` = d log alpha_bar / dt; `name` for reports."""

    alpha_bar: Callable[[Array], Array]
    dlog_alpha_bar: Callable[[Array], Array]
    name: str


def linear_schedule(beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = 1000):
    """The DDPM linear schedule as its continuous VP limit.

    beta(t) = T (beta_start + t (beta_end - beta_start)); alpha_bar(t) = exp(-int_0^t beta).
    Its grid values match prod_i (1 - beta_i) of the discrete schedule to O(beta^2).
    """
    if not 0.0 < beta_start < beta_end < 1.0:
        raise ValueError(
            f"beta_start, beta_end: expected 0 < beta_start < beta_end < 1, "
            f"got {beta_start}, {beta_end}"
        )
    b0, b1 = beta_start * num_steps, beta_end * num_steps

    def log_ab(t):
        return -(b0 * t + 0.5 * (b1 - b0) * t**2)

    return Schedule(
        alpha_bar=lambda t: jnp.maximum(jnp.exp(log_ab(t)), _AB_MIN),
        dlog_alpha_bar=lambda t: -(b0 + (b1 - b0) * t),
        name="linear",
    )


def cosine_schedule(s: float = 0.008):
    """Nichol & Dhariwal's cosine schedule: alpha_bar(t) = cos^2((t+s)/(1+s) pi/2) / f(0)."""
    if not s > 0.0:
        raise ValueError(f"s: expected a positive offset, got {s}")
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2

    def ab(t):
        return jnp.cos((t + s) / (1 + s) * jnp.pi / 2) ** 2 / f0

    def dlog(t):
        u = (t + s) / (1 + s) * jnp.pi / 2
        return -jnp.pi / (1 + s) * jnp.tan(jnp.minimum(u, jnp.pi / 2 - 1e-4))

    return Schedule(
        alpha_bar=lambda t: jnp.clip(ab(t), _AB_MIN, 1.0), dlog_alpha_bar=dlog, name="cosine"
    )


def make_schedule(name: str) -> Schedule:
    """`"linear"` or `"cosine"` with their default hyperparameters."""
    if name == "linear":
        return linear_schedule()
    if name == "cosine":
        return cosine_schedule()
    raise ValueError(f"name: expected 'linear' or 'cosine', got {name!r}")


def discrete_alpha_bars(schedule: Schedule, num_steps: int) -> Float[Array, " steps_plus_one"]:
    """alpha_bar on the grid t_i = i / T, i = 0..T (alpha_bar_0 = 1)."""
    if num_steps < 1:
        raise ValueError(f"num_steps: expected >= 1, got {num_steps}")
    t = jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps
    return schedule.alpha_bar(t).at[0].set(1.0)


def discrete_betas(schedule: Schedule, num_steps: int) -> Float[Array, " steps"]:
    """beta_i = 1 - alpha_bar_i / alpha_bar_{i-1}, clipped to 0.999 as in the DDPM papers."""
    ab = discrete_alpha_bars(schedule, num_steps)
    return jnp.clip(1.0 - ab[1:] / ab[:-1], 0.0, 0.999)


def q_sample(x0: Array, t: Array, noise: Array, schedule: Schedule) -> Array:
    """x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps, with t broadcast over trailing axes."""
    ab = schedule.alpha_bar(t).reshape(t.shape + (1,) * (x0.ndim - t.ndim))
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def noise_level(t: Array, schedule: Schedule) -> Array:
    """The continuous conditioning signal of SR3: gamma = sqrt(alpha_bar(t))."""
    return jnp.sqrt(schedule.alpha_bar(t))
