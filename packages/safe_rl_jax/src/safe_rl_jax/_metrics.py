"""Training-curve statistics of a constraint: overshoot, oscillation, cumulative cost, feasibility.

Definitions (per run, cost curve J_c[k] over policy iterations k = 0..n-1, limit d):

- `cumulative_cost`: sum_k J_c[k] (the cost paid while learning, in episode-cost units);
- `overshoot`: max_k relu(J_c[k] - d) over the second half of training, i.e. after the
  transient of the random initial policy;
- `oscillation`: mean_k |J_c[k+1] - J_c[k]| over the second half (total variation per step);
- `final_cost`: mean of J_c over the last `tail` iterations (default: the last 10%);
- feasible region: the share of (seed x limit) settings whose `final_cost <= d`.
"""

import jax.numpy as jnp

from ._types import Array, Float


def constraint_curve_stats(
    costs: Float[Array, " iters"], limit: Float[Array, ""], *, tail: int | None = None
) -> dict:
    """Scalars describing one run's cost curve (see module docstring)."""
    n = costs.shape[0]
    if n < 2:
        raise ValueError(f"costs: expected at least 2 iterations, got {n}")
    tail = max(1, n // 10) if tail is None else tail
    second = costs[n // 2 :]
    return {
        "cumulative_cost": jnp.sum(costs),
        "overshoot": jnp.max(jnp.maximum(second - limit, 0.0)),
        "oscillation": jnp.mean(jnp.abs(jnp.diff(second)))
        if second.shape[0] > 1
        else jnp.float32(0),
        "final_cost": jnp.mean(costs[n - tail :]),
    }


def feasible_region(
    final_costs: Float[Array, "..."], limits: Float[Array, "..."]
) -> Float[Array, ""]:
    """Share of settings whose final cost meets its limit (`final_cost <= limit`)."""
    return jnp.mean((final_costs <= limits).astype(jnp.float32))
