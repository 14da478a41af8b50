"""EPO's working set: fixed capacity + mask, constraint addition and deletion (exchange rule).

Shapes never change under jit: the set is `capacity` slots of indices y with a boolean mask.
`add_violated` puts every candidate whose violation exceeds `eta` into a free slot (most
violated first, skipping candidates within `min_distance` of an active one);
`drop_inactive` frees every active slot whose multiplier is zero after the policy update.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._types import Array, Bool, Float


class WorkingSet(NamedTuple):
    index: Float[Array, "capacity index_dim"]
    mask: Bool[Array, " capacity"]


def empty_working_set(capacity: int, index_dim: int) -> WorkingSet:
    if capacity < 1:
        raise ValueError(f"capacity: expected >= 1, got {capacity}")
    return WorkingSet(jnp.zeros((capacity, index_dim)), jnp.zeros((capacity,), bool))


def add_violated(
    ws: WorkingSet,
    candidates: Float[Array, "n index_dim"],
    violations: Float[Array, " n"],
    *,
    eta: float,
    min_distance: float = 0.0,
) -> tuple[WorkingSet, Bool[Array, " n"]]:
    """Add candidates with violation > eta into free slots; returns (set, which were added)."""
    order = jnp.argsort(-violations)

    def add(ws, i):
        y, viol = candidates[i], violations[i]
        dist = jnp.linalg.norm(ws.index - y[None], axis=-1)
        near = jnp.any(ws.mask & (dist <= min_distance))
        free = ~ws.mask
        slot = jnp.argmax(free)
        ok = (viol > eta) & ~near & jnp.any(free)
        index = jnp.where(ok, ws.index.at[slot].set(y), ws.index)
        mask = jnp.where(ok, ws.mask.at[slot].set(True), ws.mask)
        return WorkingSet(index, mask), ok

    ws, added_sorted = jax.lax.scan(add, ws, order)
    added = jnp.zeros_like(added_sorted).at[order].set(added_sorted)
    return ws, added


def drop_inactive(
    ws: WorkingSet, lam: Float[Array, " capacity"], *, tol: float = 0.0
) -> WorkingSet:
    """Free every active slot whose multiplier is <= tol (zero multiplier: inactive constraint)."""
    return WorkingSet(ws.index, ws.mask & (lam > tol))
