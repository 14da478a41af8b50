"""EDGC: PowerSGD whose per-stage rank follows the gradient entropy.

Each `update` (every device, inside `jax.shard_map`):
1. every `period` steps (EDGC's 1/alpha) from `start_step` on, estimate each stage's gradient
   entropy from a `fraction` (beta) subsample (single entries, or runs of `block` entries) over
   fixed bins (edges calibrated once, at the first measurement, from the sample's standard
   deviation averaged over devices, then frozen); the per-stage entropies are averaged over the
   data-parallel axis so every device takes the same decision;
2. the window controller turns entropy trends into one rank per stage;
3. PowerSGD compresses each stage's matrices at that stage's rank (masked, no recompilation).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _stats
from ._base import Compressor, check_float_tree
from ._controller import ControllerState, window_controller
from ._entropy import subsample, uniform_histogram_entropy
from ._policy import Policy, low_rank_policy, matrix_shape
from ._powersgd import PowerSGDState, powersgd
from ._rank_model import mc_error_curve, mp_error_curve
from ._types import Key, PyTree, StageValues

StageFn = Callable[[tuple, tuple[int, ...]], int]


class EDGCState(NamedTuple):
    powersgd: PowerSGDState
    controller: ControllerState
    edge_scale: StageValues  # 0 until calibrated
    bits: StageValues  # last measured entropy per stage (bits)


def _stage_ids(params: PyTree, stage_fn: StageFn, num_stages: int) -> np.ndarray:
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    ids = np.asarray([stage_fn(path, tuple(x.shape)) for path, x in flat], np.int32)
    if ids.size and (ids.min() < 0 or ids.max() >= num_stages):
        raise ValueError(
            f"stage_fn: expected stage ids in [0, {num_stages}), got {sorted(set(ids))}"
        )
    return ids


def edgc(
    *,
    num_stages: int = 1,
    stage_fn: StageFn | None = None,
    init_rank: int = 4,
    min_rank: int = 1,
    max_rank: int = 8,
    window: int = 10,
    period: int = 1,
    fraction: float = 0.05,
    block: int = 1,
    bins: int = 256,
    edge_width: float = 4.0,
    hysteresis_bits: float = 0.05,
    start_step: int = 0,
    curve: str = "mp",
    policy: Policy | None = None,
    seed: int = 0,
) -> Compressor:
    """EDGC compressor. `update(grads, state, *, key, axis_name=None)` needs a `key` (subsampling).

    `stage_fn(path, shape) -> stage id` assigns each parameter to a pipeline stage (default: all 0).
    `curve` is "mp" (Marchenko-Pastur) or "mc" (Monte Carlo) for the stage's largest matrix.
    The entropy sample is a `fraction` of each stage's compressed entries, drawn as single entries
    (`block=1`) or as contiguous runs of `block` entries (`subsample`'s cheaper block sampler).
    """
    if not isinstance(num_stages, int) or num_stages < 1:
        raise ValueError(f"num_stages: expected a positive int, got {num_stages!r}")
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"period: expected a positive int, got {period!r}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: expected a number in (0, 1], got {fraction!r}")
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block: expected a positive int, got {block!r}")
    if curve not in ("mp", "mc"):
        raise ValueError(f"curve: expected 'mp' or 'mc', got {curve!r}")
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins: expected an int >= 2, got {bins!r}")
    stage_fn = stage_fn or (lambda path, shape: 0)
    policy = policy or low_rank_policy(max_rank)
    psgd = powersgd(init_rank, max_rank=max_rank, start_step=start_step, policy=policy, seed=seed)

    def _layout(params):
        leaves = jax.tree.leaves(params)
        ids = _stage_ids(params, stage_fn, num_stages)
        compressed = [policy(tuple(x.shape)) for x in leaves]
        return leaves, ids, compressed

    def _controller(params):
        leaves, ids, compressed = _layout(params)
        curves = []
        for s in range(num_stages):
            mats = [
                matrix_shape(tuple(x.shape))
                for x, i, c in zip(leaves, ids, compressed, strict=True)
                if c and i == s
            ]
            if not mats:
                raise ValueError(f"stage_fn: stage {s} has no compressed matrix")
            n, m = max(mats, key=lambda nm: nm[0] * nm[1])
            r = min(max_rank, n, m)
            if curve == "mp":
                c = mp_error_curve(n, m, r)
            else:
                c = np.asarray(mc_error_curve(n, m, r, key=jax.random.key(seed), samples=4))
            curves.append(np.concatenate([c, np.full(max_rank - r, c[-1])]))
        return window_controller(
            np.stack(curves),
            init_rank=init_rank,
            min_rank=min_rank,
            window=window,
            warmup=start_step,
            hysteresis_bits=hysteresis_bits,
        )

    def init(params: PyTree) -> EDGCState:
        check_float_tree(params, "params")
        z = jnp.zeros((num_stages,), jnp.float32)
        return EDGCState(psgd.init(params), _controller(params).init(), z, z)

    def _measure(stage_leaves, scale, key, axis_name):
        """(per-stage bits, bin scales, whether the bins were calibrated now)."""
        samples = [
            subsample(leaves, fraction=fraction, key=k, block=block)
            for leaves, k in zip(stage_leaves, jax.random.split(key, num_stages), strict=True)
        ]
        calibrate = jnp.any(scale <= 0)
        # the bins' scale: the sample std, averaged over devices once (one tiny all-reduce)
        scale = lax.cond(
            calibrate,
            lambda: jnp.where(
                scale > 0,
                scale,
                jnp.maximum(
                    _stats.pmean(jnp.stack([jnp.std(x) for x in samples]), axis_name), 1e-30
                ),
            ),
            lambda: scale,
        )
        bits = [
            uniform_histogram_entropy(x, -edge_width * sc, edge_width * sc, bins)
            for x, sc in zip(samples, scale, strict=True)
        ]
        # one tiny all-reduce so every device takes the same rank decision
        return _stats.pmean(jnp.stack(bits), axis_name), scale, calibrate

    def update(grads: PyTree, state: EDGCState, *, key: Key | None = None, axis_name=None):
        if key is None:
            raise ValueError("key: EDGC subsamples the gradient; pass key=jax.random.key(...)")
        leaves, ids, compressed = _layout(grads)
        ctrl = _controller(grads)
        stage_leaves = [
            [x for x, i, c in zip(leaves, ids, compressed, strict=True) if c and i == s]
            for s in range(num_stages)
        ]
        step = state.powersgd.step
        # Entropy is measured once compression starts: bins are calibrated on the first
        # compressed step's gradients (early-training gradients are unrepresentative).
        measured = (step % period == 0) & (step >= start_step)
        bits, scale, calibrated = lax.cond(
            measured,
            lambda: _measure(stage_leaves, state.edge_scale, key, axis_name),
            lambda: (state.bits, state.edge_scale, jnp.zeros((), bool)),
        )
        cstate = ctrl.update(state.controller, bits, measured)
        leaf_ranks = cstate.ranks[jnp.asarray(ids)]
        out, pstate, stats = psgd.update(
            grads, state.powersgd, axis_name=axis_name, ranks=leaf_ranks
        )
        # the entropy pmean, sent only on measurement steps; the std pmean once, to calibrate
        sent = measured.astype(jnp.int32) + calibrated.astype(jnp.int32)
        stats = stats + _stats.allreduce_stats(4 * num_stages * sent, messages=sent)
        return out, EDGCState(pstate, cstate, scale, bits), stats

    return Compressor(init, update)
