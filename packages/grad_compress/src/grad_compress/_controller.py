"""EDGC's window-based rank controller: one rank per pipeline stage, adapted from entropy trends.

Every step the controller may receive a per-stage entropy measurement (`measured`). Measurements
are averaged over a window of `window` steps; at the end of each window (after `warmup` steps)
each stage's rank is set by the rank-error model (`rank_for_entropy`): the first window fixes the
reference (rank `init_rank` at the window's mean entropy), later windows pick the rank that keeps
the reference's absolute Eckart-Young error constant. A rank moves at most by a factor of 2 per
window and only if the window's entropy moved by more than `hysteresis_bits`, which keeps the
rank from flapping on measurement noise.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._rank_model import rank_for_entropy
from ._types import Array, Float, StageInts, StageValues


class ControllerState(NamedTuple):
    step: jax.Array
    bits_sum: StageValues
    count: StageValues
    ref_bits: StageValues  # NaN until the first window after warmup
    last_bits: StageValues  # entropy of the last completed window (NaN before)
    ranks: StageInts


class RankController(NamedTuple):
    init: object
    update: object


def window_controller(
    curves: Float[Array | np.ndarray, "stages max_rank"],
    *,
    init_rank: int,
    min_rank: int = 1,
    window: int = 10,
    warmup: int = 0,
    hysteresis_bits: float = 0.0,
) -> RankController:
    """Build the controller from per-stage error curves e(r), r = 1..max_rank (see _rank_model)."""
    curves = jnp.asarray(np.asarray(curves, np.float32))
    if curves.ndim != 2 or curves.shape[1] < 1:
        raise ValueError(f"curves: expected shape (stages, max_rank), got {curves.shape}")
    max_rank = curves.shape[1]
    if not isinstance(init_rank, int) or not min_rank <= init_rank <= max_rank:
        raise ValueError(
            f"init_rank: expected an int in [{min_rank}, {max_rank}], got {init_rank!r}"
        )
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window: expected a positive int, got {window!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup: expected a non-negative int, got {warmup!r}")
    stages = curves.shape[0]

    def init() -> ControllerState:
        z = jnp.zeros((stages,), jnp.float32)
        nan = jnp.full((stages,), jnp.nan, jnp.float32)
        ranks = jnp.full((stages,), init_rank, jnp.int32)
        return ControllerState(jnp.zeros((), jnp.int32), z, z, nan, nan, ranks)

    def update(state: ControllerState, bits: StageValues, measured) -> ControllerState:
        measured = jnp.asarray(measured, bool)
        bits_sum = state.bits_sum + jnp.where(measured, bits, 0.0)
        count = state.count + measured.astype(jnp.float32)
        step = state.step + 1
        decide = (step % window == 0) & (step > warmup) & jnp.all(count > 0)
        mean = bits_sum / jnp.maximum(count, 1.0)
        first = jnp.isnan(state.ref_bits)
        ref_bits = jnp.where(first, mean, state.ref_bits)
        proposal = jax.vmap(
            lambda c, rb, b: rank_for_entropy(c, init_rank, rb, b, min_rank=min_rank)
        )(curves, ref_bits, mean)
        moved = jnp.abs(mean - jnp.where(jnp.isnan(state.last_bits), mean, state.last_bits))
        damped = jnp.clip(proposal, jnp.maximum(state.ranks // 2, min_rank), state.ranks * 2)
        new_rank = jnp.where(
            first, init_rank, jnp.where(moved > hysteresis_bits, damped, state.ranks)
        )
        new_rank = jnp.clip(new_rank, min_rank, max_rank).astype(jnp.int32)
        return ControllerState(
            step,
            jnp.where(decide, 0.0, bits_sum),
            jnp.where(decide, 0.0, count),
            jnp.where(decide, ref_bits, state.ref_bits),
            jnp.where(decide, mean, state.last_bits),
            jnp.where(decide, new_rank, state.ranks),
        )

    return RankController(init, update)
