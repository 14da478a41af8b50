"""Lagrange-multiplier controllers as `(init, update)` pairs of pure functions.

A controller sees one `ConstraintSignal` per policy iteration and returns the multipliers
`lam >= 0` (one per constraint slot) used for the next policy update. Everything is a vector
over constraint slots with a boolean `mask`: inactive slots get `lam = 0` and their state is
reset, so a slot can be reused by a new constraint (EPO's working set) without reshaping.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._types import Array, Costs, Float, Mask


class ConstraintSignal(NamedTuple):
    """What the learner measured this iteration.

    `cost`: estimated episode cost J_c per slot; `limit`: threshold d per slot; `mask`: which
    slots are active; `reward_dot`: g_c·g_r and `gram`: g_ci·g_cj, the policy-gradient inner
    products that predictive controllers (PLO) use; zeros when not computed.
    """

    cost: Costs
    limit: Costs
    mask: Mask
    reward_dot: Costs
    gram: Float[Array, "costs costs"]


def constraint_signal(cost, limit, mask=None, reward_dot=None, gram=None) -> ConstraintSignal:
    """Build a signal; missing pieces default to an all-active mask and zero gradients."""
    cost = jnp.asarray(cost, jnp.float32)
    k = cost.shape[-1]
    limit = jnp.broadcast_to(jnp.asarray(limit, jnp.float32), cost.shape)
    mask = jnp.ones(cost.shape, bool) if mask is None else jnp.asarray(mask, bool)
    reward_dot = (
        jnp.zeros_like(cost) if reward_dot is None else jnp.asarray(reward_dot, jnp.float32)
    )
    gram = jnp.zeros((*cost.shape[:-1], k, k)) if gram is None else jnp.asarray(gram, jnp.float32)
    return ConstraintSignal(cost, limit, mask, reward_dot, gram)


class MultiplierController(NamedTuple):
    """`init(num_constraints) -> state`; `update(state, signal) -> (lam, state)`.

    `uses_gradients` tells the learner to fill `reward_dot` / `gram` in the signal.
    """

    init: Callable[[int], Any]
    update: Callable[[Any, ConstraintSignal], tuple[Costs, Any]]
    uses_gradients: bool = False


def masked(controller: MultiplierController) -> MultiplierController:
    """Wrap a controller so inactive slots output 0 and restart from the initial state."""

    def update(state, signal):
        lam, new = controller.update(state, signal)
        fresh = controller.init(signal.cost.shape[-1])

        def pick(n, f):
            m = signal.mask.reshape(signal.mask.shape + (1,) * (n.ndim - 1))
            return jnp.where(m, n, f) if n.ndim >= 1 and n.shape[:1] == signal.mask.shape else n

        return jnp.where(signal.mask, lam, 0.0), jax.tree.map(pick, new, fresh)

    return MultiplierController(controller.init, update, controller.uses_gradients)


# --- gradient-ascent Lagrangian -------------------------------------------------------------


class LagrangianState(NamedTuple):
    lam: Costs


def lagrangian(learning_rate: float = 0.035, init_value: float = 0.0) -> MultiplierController:
    """Plain dual (sub)gradient ascent: lam <- max(0, lam + lr (J_c - d)). An I-controller."""
    if learning_rate <= 0:
        raise ValueError(f"learning_rate: expected > 0, got {learning_rate}")

    def init(k):
        return LagrangianState(jnp.full((k,), init_value, jnp.float32))

    def update(state, s):
        lam = jnp.maximum(0.0, state.lam + learning_rate * (s.cost - s.limit))
        return lam, LagrangianState(lam)

    return masked(MultiplierController(init, update))


# --- PID Lagrangian (Stooke et al. 2020; OmniSafe's CPPO-PID defaults) ---------------------


class PIDState(NamedTuple):
    integral: Costs
    ema_delta: Costs
    ema_cost: Costs
    history: Float[Array, "costs delay"]
    count: Costs


def pid_lagrangian(
    kp: float = 0.1,
    ki: float = 0.01,
    kd: float = 0.01,
    *,
    delay: int = 10,
    ema_delta: float = 0.95,
    ema_cost: float = 0.95,
    init_value: float = 0.0,
) -> MultiplierController:
    """Positional PID Lagrangian as in OmniSafe's `PIDLagrangian` (defaults are OmniSafe's).

    delta = J_c - d; I <- max(0, I + ki delta); P = EMA(delta); D = max(0, EMA(J_c) - EMA(J_c)
    `delay` iterations ago); lam = max(0, kp P + I + kd D).
    """
    for name, v in (("kp", kp), ("ki", ki), ("kd", kd)):
        if v < 0:
            raise ValueError(f"{name}: expected >= 0, got {v}")
    if delay < 1:
        raise ValueError(f"delay: expected >= 1, got {delay}")

    def init(k):
        z = jnp.zeros((k,), jnp.float32)
        return PIDState(z + init_value, z, z, jnp.zeros((k, delay)), z)

    def update(state, s):
        delta = s.cost - s.limit
        integral = jnp.maximum(0.0, state.integral + ki * delta)
        first = state.count == 0
        ed = jnp.where(first, delta, ema_delta * state.ema_delta + (1 - ema_delta) * delta)
        ec = jnp.where(first, s.cost, ema_cost * state.ema_cost + (1 - ema_cost) * s.cost)
        # The oldest entry of the delay line (OmniSafe's deque starts filled with zeros).
        deriv = jnp.maximum(0.0, ec - state.history[:, 0])
        history = jnp.concatenate([state.history[:, 1:], ec[:, None]], axis=1)
        lam = jnp.maximum(0.0, kp * ed + integral + kd * deriv)
        return lam, PIDState(integral, ed, ec, history, state.count + 1)

    return masked(MultiplierController(init, update))


class IncrementalPIDState(NamedTuple):
    lam: Costs
    e1: Costs
    e2: Costs


def incremental_pid_lagrangian(
    kp: float = 0.1, ki: float = 0.01, kd: float = 0.01, *, init_value: float = 0.0
) -> MultiplierController:
    """Velocity-form PID: lam_k = max(0, lam_{k-1} + kp Δe + ki e + kd Δ²e), e = J_c - d."""

    def init(k):
        z = jnp.zeros((k,), jnp.float32)
        return IncrementalPIDState(z + init_value, z, z)

    def update(state, s):
        e = s.cost - s.limit
        lam = state.lam + kp * (e - state.e1) + ki * e + kd * (e - 2 * state.e1 + state.e2)
        lam = jnp.maximum(0.0, lam)
        return lam, IncrementalPIDState(lam, e, state.e1)

    return masked(MultiplierController(init, update))


# --- penalty method (a P-controller on the violation) ----------------------------------------


class PenaltyState(NamedTuple):
    lam: Costs


def penalty(coefficient: float = 5.0) -> MultiplierController:
    """Quadratic exterior penalty: the policy maximises J_r - (coefficient / 2) sum relu(J_c - d)^2.

    Its gradient weighs each cost gradient by `coefficient * relu(J_c - d)`, so in the
    Lagrangian learner the penalty method is the multiplier `lam = coefficient * relu(J_c - d)`:
    pure proportional feedback, no memory (PLO's framing). It cannot hold the cost exactly at
    the limit: at equilibrium some violation remains, shrinking as `coefficient` grows.
    """
    if coefficient <= 0:
        raise ValueError(f"coefficient: expected > 0, got {coefficient}")

    def init(k):
        return PenaltyState(jnp.zeros((k,), jnp.float32))

    def update(state, s):
        lam = coefficient * jnp.maximum(0.0, s.cost - s.limit)
        return lam, PenaltyState(lam)

    return masked(MultiplierController(init, update))
