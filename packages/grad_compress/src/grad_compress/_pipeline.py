"""GPipe pipeline parallelism over a mesh axis, with optionally low-rank inter-stage links.

Inside `jax.shard_map`, every device on the pipeline axis holds one stage's parameters (the
stages share one structure, e.g. a stack of transformer blocks). `gpipe` runs the GPipe schedule
as a `lax.scan` over `micro + stages - 1` ticks: at tick t stage s processes micro-batch t - s,
then `stage_send` hands its output to stage s + 1 with `lax.ppermute`. Differentiating the scan
gives GPipe's backward: the transpose of each send is a `ppermute` of the activation gradient
from stage s + 1 back to stage s (all forwards, then all backwards).

EDGC-style link compression (`ranks`, one per stage boundary): the activation X (rows x
features) is sent as rank-r factors, P = orth(X Q0) and Qt = X^T P (one power step from a fixed
random Q0; no error feedback, activations are not accumulated across steps); the receiver uses
P Qt^T. The activation gradient goes back through the same compression at the same boundary's
rank (a `custom_vjp`). With r = min(rows, features) the link is exact up to float rounding.
Ranks may change between steps without recompiling: P and Qt are computed at `max_rank` columns
(the inactive ones zero) and cut, before the `ppermute`, to one of `buckets` static widths
(`bucket_sizes(max_rank, buckets)`, `lax.switch` over them). One `ppermute` carries every
boundary's send, so every stage cuts to the same width: the smallest bucket holding the largest
boundary rank (ranks must be the same on every device of the pipeline axis). `PipelineStats`
counts exactly that cut payload, w (rows + features) x 4 bytes per send; with the default
`buckets = max_rank` a single boundary (or equal ranks) sends exactly its rank's columns.
"""

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._controller import RankController, window_controller
from ._entropy import subsample, uniform_histogram_entropy
from ._powersgd import bucket_sizes, orthogonalize
from ._rank_model import mp_error_curve
from ._types import Array, Float, Key, PyTree, Scalar, StageInts

Activations = Float[Array, "micro batch *feature"]


class PipelineStats(NamedTuple):
    """One device's pipeline traffic in one training step (forward + backward sends).

    `p2p_bytes` / `p2p_messages`: payloads this device hands to `ppermute` for the `micro` real
    micro-batches (activations to the next stage, activation gradients to the previous one;
    bubble ticks carry nothing in a real schedule and are not counted). `bits` / `std`: entropy
    (fixed bins) and standard deviation of this stage's first sent activation (0 if unmeasured).
    """

    p2p_bytes: Scalar
    p2p_messages: Scalar
    bits: Scalar
    std: Scalar


def _forward_perm(stages: int) -> list[tuple[int, int]]:
    return [(s, s + 1) for s in range(stages - 1)]


def _backward_perm(stages: int) -> list[tuple[int, int]]:
    return [(s + 1, s) for s in range(stages - 1)]


def _link_send(payload, axis_name: str, perm):
    """Every inter-stage send goes through here (tests wrap it to check the bytes)."""
    return lax.ppermute(payload, axis_name, perm)


def _width_index(ranks, stages: int, widths: tuple[int, ...]) -> jax.Array:
    """Index of the smallest width holding the largest boundary rank (the same on every stage)."""
    largest = jnp.max(jnp.asarray(ranks)[: max(stages - 1, 1)])  # one stage: nothing is sent
    return jnp.minimum(jnp.searchsorted(jnp.asarray(widths), largest), len(widths) - 1)


def _low_rank_transfer(x: jax.Array, rank, width, axis_name: str, perm, widths) -> jax.Array:
    """Send x (..., m) as rank-`rank` factors over `perm`, cut to `widths[width]` columns."""
    mat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    max_rank = widths[-1]
    q0 = jax.random.normal(jax.random.key(0), (mat.shape[1], max_rank), mat.dtype)
    mask = jnp.arange(max_rank) < rank
    p = orthogonalize(mat @ (q0 * mask.astype(q0.dtype)[None, :]), mask=mask)
    qt = mat.T @ p

    def send(w: int):
        def branch(p, qt):  # only the first w columns travel (the others are zero)
            p_w, qt_w = _link_send((p[:, :w], qt[:, :w]), axis_name, perm)
            return p_w @ qt_w.T

        return branch

    y = lax.switch(width, [send(w) for w in widths], p, qt)
    return y.reshape(x.shape).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _compressed_send(x, fwd_rank, bwd_rank, width, axis_name: str, stages: int, widths):
    return _low_rank_transfer(x, fwd_rank, width, axis_name, _forward_perm(stages), widths)


def _compressed_send_fwd(x, fwd_rank, bwd_rank, width, axis_name, stages, widths):
    y = _low_rank_transfer(x, fwd_rank, width, axis_name, _forward_perm(stages), widths)
    return y, (fwd_rank, bwd_rank, width)


def _compressed_send_bwd(axis_name, stages, widths, res, ct):
    fwd_rank, bwd_rank, width = res
    ct_x = _low_rank_transfer(ct, bwd_rank, width, axis_name, _backward_perm(stages), widths)
    zero = lambda r: jnp.zeros(r.shape, jax.dtypes.float0)
    return ct_x, zero(fwd_rank), zero(bwd_rank), zero(width)


_compressed_send.defvjp(_compressed_send_fwd, _compressed_send_bwd)


def _link_widths(max_rank: int, buckets: int | None = None) -> tuple[int, ...]:
    """The static factor widths a low-rank link may send (default `buckets = max_rank`: all)."""
    buckets = max_rank if buckets is None else buckets
    if not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"buckets: expected a positive int, got {buckets!r}")
    return bucket_sizes(max_rank, min(buckets, max_rank))


def stage_send(
    x: jax.Array,
    *,
    axis_name: str,
    ranks: StageInts | None = None,
    max_rank: int | None = None,
    buckets: int | None = None,
) -> jax.Array:
    """Stage s -> s + 1 `ppermute` of `x` (stage 0 receives zeros); gradients flow back s+1 -> s.

    `ranks[s]` is the rank of the boundary s -> s + 1 (both directions); None sends `x` as is.
    The factors travel cut to the smallest of `buckets` static widths (default: all `max_rank`)
    holding the largest boundary rank (`ranks` must be equal on every device of `axis_name`).
    """
    stages = lax.axis_size(axis_name)
    if ranks is None:
        return lax.ppermute(x, axis_name, _forward_perm(stages))
    _check_ranks(ranks, stages, max_rank, x.size // x.shape[-1], x.shape[-1])
    s = lax.axis_index(axis_name)
    fwd_rank = ranks[jnp.minimum(s, stages - 1)]
    bwd_rank = ranks[jnp.maximum(s - 1, 0)]
    widths = _link_widths(max_rank, buckets)
    width = _width_index(ranks, stages, widths)
    return _compressed_send(x, fwd_rank, bwd_rank, width, axis_name, stages, widths)


def _check_ranks(ranks, stages: int, max_rank: int | None, rows: int, feats: int) -> int:
    if ranks is None:
        return 0
    if max_rank is None or not isinstance(max_rank, int) or max_rank < 1:
        raise ValueError(f"max_rank: expected a positive int with ranks, got {max_rank!r}")
    if max_rank > min(rows, feats):
        raise ValueError(
            f"max_rank: expected <= min(rows, features) = {min(rows, feats)} of the "
            f"({rows}, {feats}) activation matrix, got {max_rank}"
        )
    if jnp.shape(ranks) != (stages,):
        raise ValueError(
            f"ranks: expected shape ({stages},), one per stage, got {jnp.shape(ranks)}"
        )
    return max_rank


def gpipe(
    stage_fn: Callable[[PyTree, jax.Array], jax.Array],
    params: PyTree,
    inputs: Activations,
    *,
    axis_name: str,
    ranks: StageInts | None = None,
    max_rank: int | None = None,
    buckets: int | None = None,
    entropy_scale: Scalar | None = None,
    bins: int = 256,
    edge_width: float = 4.0,
    fraction: float = 1.0,
    key: Key | None = None,
) -> tuple[Activations, PipelineStats]:
    """GPipe forward over `axis_name` (call inside `jax.shard_map`; differentiable).

    Args:
      stage_fn: `stage_fn(params, x) -> y` with `y.shape == x.shape` (one stage).
      params: this device's stage parameters.
      inputs: the micro-batches entering stage 0 (read on stage 0 only).
      axis_name: the pipeline mesh axis; its size is the number of stages.
      ranks: int array, one link rank per stage boundary (`ranks[s]`: s -> s + 1); None sends
        activations uncompressed.
      max_rank: factor columns compiled in (>= every rank), with `ranks`.
      buckets: how many static widths, ceil(j * max_rank / buckets) for j = 1..buckets, the
        factors may be cut to (default `max_rank`: every width, the largest rank sent exactly).
      entropy_scale: if given, measure the entropy of this stage's first sent activation over
        `bins` fixed bins on [-edge_width * scale, edge_width * scale], on a `fraction` subsample
        (`key` needed if fraction < 1).

    Returns: the last stage's outputs for every micro-batch (zeros on other stages) and this
    device's `PipelineStats`.
    """
    stages = lax.axis_size(axis_name)
    if inputs.ndim < 3 or inputs.shape[0] < 1:
        raise ValueError(
            f"inputs: expected (micro, batch, ..., features) with micro >= 1, got {inputs.shape}"
        )
    out = jax.eval_shape(stage_fn, params, inputs[0])
    if out.shape != inputs.shape[1:] or out.dtype != inputs.dtype:
        raise ValueError(
            f"stage_fn: expected an output like its input {inputs.shape[1:]} {inputs.dtype}, "
            f"got {out.shape} {out.dtype}"
        )
    micro = inputs.shape[0]
    rows, feats = inputs[0].size // inputs.shape[-1], inputs.shape[-1]
    max_rank = _check_ranks(ranks, stages, max_rank, rows, feats)
    s = lax.axis_index(axis_name)

    def tick(received, t):
        fresh = lax.dynamic_index_in_dim(inputs, jnp.minimum(t, micro - 1), 0, keepdims=False)
        x = jnp.where(s == 0, fresh, received)
        y = stage_fn(params, x)
        sent = stage_send(y, axis_name=axis_name, ranks=ranks, max_rank=max_rank, buckets=buckets)
        return sent, y

    _, ys = lax.scan(tick, jnp.zeros_like(inputs[0]), jnp.arange(micro + stages - 1))
    outputs = jnp.where(s == stages - 1, lax.dynamic_slice_in_dim(ys, stages - 1, micro, 0), 0.0)

    itemsize = jnp.dtype(inputs.dtype).itemsize
    if ranks is None:
        per_send, msgs = jnp.float32(rows * feats * itemsize), 1.0
        fwd_bytes = bwd_bytes = per_send
    else:
        # every send carries the same cut width: the bucket of the largest boundary rank
        widths = _link_widths(max_rank, buckets)
        width = jnp.asarray(widths)[_width_index(ranks, stages, widths)]
        fwd_bytes = bwd_bytes = (width * (rows + feats) * 4).astype(jnp.float32)
        msgs = 2.0  # P and Qt
    sends_fwd = jnp.where(s < stages - 1, micro, 0).astype(jnp.float32)
    sends_bwd = jnp.where(s > 0, micro, 0).astype(jnp.float32)
    nbytes = sends_fwd * fwd_bytes + sends_bwd * bwd_bytes
    messages = (sends_fwd + sends_bwd) * msgs

    bits = std = jnp.zeros((), jnp.float32)
    if entropy_scale is not None:
        first = lax.stop_gradient(lax.dynamic_index_in_dim(ys, s, 0, False))
        sample = first.reshape(-1).astype(jnp.float32)
        if fraction < 1.0:
            if key is None:
                raise ValueError("key: subsampling (fraction < 1) needs key=jax.random.key(...)")
            sample = subsample(sample, fraction=fraction, key=jax.random.fold_in(key, s))
        std = jnp.std(sample)
        scale = jnp.where(entropy_scale > 0, entropy_scale, jnp.maximum(std, 1e-30))
        bits = uniform_histogram_entropy(sample, -edge_width * scale, edge_width * scale, bins)
    return outputs, PipelineStats(nbytes, messages, bits, std)


def link_controller(
    rows: int,
    features: int,
    *,
    stages: int,
    init_rank: int,
    max_rank: int,
    min_rank: int = 1,
    window: int = 10,
    warmup: int = 0,
    hysteresis_bits: float = 0.0,
) -> RankController:
    """EDGC's window controller for the inter-stage links: one rank per stage boundary.

    The error curve of every boundary is the Marchenko-Pastur estimate for a (rows, features)
    activation matrix; feed it the per-stage `PipelineStats.bits` (gathered over the pipeline
    axis) and pass its `ranks` to the next step's `gpipe`.
    """
    if not isinstance(stages, int) or stages < 2:
        raise ValueError(f"stages: expected an int >= 2, got {stages!r}")
    curve = mp_error_curve(rows, features, max_rank)
    return window_controller(
        np.tile(curve[None], (stages, 1)),
        init_rank=init_rank,
        min_rank=min_rank,
        window=window,
        warmup=warmup,
        hysteresis_bits=hysteresis_bits,
    )
