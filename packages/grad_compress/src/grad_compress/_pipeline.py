"""GPipe pipeline parallelism over a mesh axis, with optionally low-rank inter-stage links.

Inside `jax.shard_map`, every device on the pipeline axis holds one stage's parameters (the
stages share one structure, e.g. a stack of transformer blocks). `gpipe` runs the GPipe schedule
as a `lax.scan` over `micro + stages - 1` ticks: at tick t stage s processes micro-batch t - s,
then `stage_send` hands its output to stage s + 1. Differentiating the scan gives GPipe's
backward: each send's transpose sends the activation gradient from stage s + 1 back to stage s
(all forwards, then all backwards).

Every boundary b (stage b -> b + 1) has its own `ppermute`, inside its own `lax.switch` whose
index depends only on `ranks[b]` and the tick, values that are equal on every device of the
pipeline axis, so every device takes the same branch and the collective stays SPMD-uniform.
Branch 0 sends nothing: `gpipe` takes it on the bubble ticks (tick t carries a real send over
boundary b only if b <= t < b + micro), so the compiled program sends exactly the `micro` real
sends per boundary and direction that `PipelineStats` counts.

EDGC-style link compression (`ranks`, one per stage boundary): the activation X (rows x
features) is sent as rank-r factors, P = orth(X Q0) and Qt = X^T P (one power step from a fixed
random Q0; no error feedback, activations are not accumulated across steps); the receiver uses
P Qt^T. The activation gradient goes back through the same compression at the same boundary's
rank (a `custom_vjp`). With r = min(rows, features) the link is exact up to float rounding.
Ranks may change between steps without recompiling: P and Qt are computed at `max_rank` columns
(the inactive ones zero) and cut, before the boundary's `ppermute`, to the smallest of `buckets`
static widths (`bucket_sizes(max_rank, buckets)`) holding that boundary's rank, so boundaries
with different ranks send different widths. With `raw_when_cheaper`, a boundary whose cut
factors, w (rows + features) x 4 bytes, are no smaller than the activation itself sends the
activation unchanged (exact) instead.
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

    `p2p_bytes` / `p2p_messages`: payloads this device hands to `ppermute` (activations or their
    factors to the next stage, activation gradients to the previous one), one send per real
    micro-batch and direction; the bubble ticks send nothing, so this is also what crosses the
    wire. `bits` / `std`: entropy (fixed bins) and standard deviation of this stage's first sent
    activation (0 if unmeasured).
    """

    p2p_bytes: Scalar
    p2p_messages: Scalar
    bits: Scalar
    std: Scalar


class _Link(NamedTuple):
    """Static description of the links (hashable: a `custom_vjp` non-differentiable argument).

    Branches of each boundary's `lax.switch`: 0 = no send, 1..len(factor_widths) = factors cut
    to that width, then (if `raw`) the activation itself.
    """

    stages: int
    max_rank: int  # factor columns computed (0: uncompressed links)
    widths: tuple[int, ...]  # every bucket width a rank may map to
    factor_widths: tuple[int, ...]  # the prefix of `widths` sent as factors
    raw: bool  # whether the activation-as-is branch exists


def _make_link(stages, max_rank, buckets, raw_when_cheaper, rows, feats, itemsize) -> _Link:
    if max_rank is None:  # uncompressed: the raw branch only
        return _Link(stages, 0, (), (), True)
    widths = _link_widths(max_rank, buckets)
    raw_bytes = rows * feats * itemsize
    factor = tuple(
        w for w in widths if not (raw_when_cheaper and w * (rows + feats) * 4 >= raw_bytes)
    )
    return _Link(stages, max_rank, widths, factor, len(factor) < len(widths))


def _branch_bytes(
    link: _Link, rows: int, feats: int, itemsize: int
) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, messages) of one send in each branch."""
    nbytes = [0] + [w * (rows + feats) * 4 for w in link.factor_widths]
    msgs = [0] + [2] * len(link.factor_widths)  # P and Qt
    if link.raw:
        nbytes.append(rows * feats * itemsize)
        msgs.append(1)
    return np.asarray(nbytes, np.float32), np.asarray(msgs, np.float32)


def _branch_index(link: _Link, ranks, live) -> jax.Array:
    """Per boundary, the `lax.switch` branch: its rank's bucket, raw, or 0 where not `live`."""
    boundaries = link.stages - 1
    if link.max_rank == 0:
        index = jnp.ones((boundaries,), jnp.int32)
    else:
        r = jnp.asarray(ranks)[:boundaries]
        wi = jnp.minimum(jnp.searchsorted(jnp.asarray(link.widths), r), len(link.widths) - 1)
        index = jnp.where(wi < len(link.factor_widths), 1 + wi, len(link.factor_widths) + 1)
    if live is not None:
        index = jnp.where(live, index, 0)
    return index.astype(jnp.int32)


def _link_send(payload, axis_name: str, perm):
    """Every inter-stage send goes through here (tests wrap it to check the bytes)."""
    return lax.ppermute(payload, axis_name, perm)


def _transfer(x: jax.Array, index, rank, axis_name: str, link: _Link, backward: bool):
    """Send x (..., m) over every boundary (forward s -> s + 1, or backward s + 1 -> s)."""
    s = lax.axis_index(axis_name)
    p = qt = jnp.zeros((0, 0), jnp.float32)
    if link.factor_widths:
        mat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
        q0 = jax.random.normal(jax.random.key(0), (mat.shape[1], link.max_rank), mat.dtype)
        mask = jnp.arange(link.max_rank) < rank
        p = orthogonalize(mat @ (q0 * mask.astype(q0.dtype)[None, :]), mask=mask)
        qt = mat.T @ p

    def nothing(x, p, qt):  # a bubble tick: no send, the receiver gets zeros
        return jnp.zeros_like(x)

    def factors(w: int, perm):
        def branch(x, p, qt):  # only the first w columns travel (the others are zero)
            p_w, qt_w = _link_send((p[:, :w], qt[:, :w]), axis_name, perm)
            return (p_w @ qt_w.T).reshape(x.shape).astype(x.dtype)

        return branch

    def raw(perm):
        return lambda x, p, qt: _link_send(x, axis_name, perm)

    y = jnp.zeros_like(x)
    for b in range(link.stages - 1):
        src, dst = (b + 1, b) if backward else (b, b + 1)
        perm = [(src, dst)]
        branches = [nothing] + [factors(w, perm) for w in link.factor_widths]
        branches += [raw(perm)] if link.raw else []
        y = jnp.where(s == dst, lax.switch(index[b], branches, x, p, qt), y)
    return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _send(x, index, fwd_rank, bwd_rank, axis_name: str, link: _Link):
    return _transfer(x, index, fwd_rank, axis_name, link, backward=False)


def _send_fwd(x, index, fwd_rank, bwd_rank, axis_name, link):
    return _send(x, index, fwd_rank, bwd_rank, axis_name, link), (index, fwd_rank, bwd_rank)


def _send_bwd(axis_name, link, res, ct):
    index, fwd_rank, bwd_rank = res
    ct_x = _transfer(ct, index, bwd_rank, axis_name, link, backward=True)
    zero = lambda r: jnp.zeros(r.shape, jax.dtypes.float0)
    return ct_x, zero(index), zero(fwd_rank), zero(bwd_rank)


_send.defvjp(_send_fwd, _send_bwd)


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
    raw_when_cheaper: bool = False,
) -> jax.Array:
    """Stage s -> s + 1 send of `x` (stage 0 receives zeros); gradients flow back s+1 -> s.

    `ranks[s]` is the rank of the boundary s -> s + 1 (both directions); None sends `x` as is.
    Each boundary sends its factors cut to the smallest of `buckets` static widths (default: all
    `max_rank`) holding its rank (`ranks` must be equal on every device of `axis_name`); with
    `raw_when_cheaper`, `x` itself where that is no more bytes than the cut factors.
    """
    return _stage_send(x, axis_name, ranks, max_rank, buckets, raw_when_cheaper, live=None)


def _stage_send(x, axis_name, ranks, max_rank, buckets, raw_when_cheaper, live: jax.Array | None):
    """`stage_send`; boundary b sends only where `live[b]` (equal on every device; None: all)."""
    stages = lax.axis_size(axis_name)
    rows, feats = x.size // x.shape[-1], x.shape[-1]
    itemsize = jnp.dtype(x.dtype).itemsize
    max_rank = _check_ranks(ranks, stages, max_rank, rows, feats)
    link = _make_link(stages, max_rank, buckets, raw_when_cheaper, rows, feats, itemsize)
    index = _branch_index(link, ranks, live)
    if ranks is None:
        fwd_rank = bwd_rank = jnp.zeros((), jnp.int32)
    else:
        s = lax.axis_index(axis_name)
        fwd_rank = ranks[jnp.minimum(s, stages - 1)]
        bwd_rank = ranks[jnp.maximum(s - 1, 0)]
    return _send(x, index, fwd_rank, bwd_rank, axis_name, link)


def _check_ranks(ranks, stages: int, max_rank: int | None, rows: int, feats: int) -> int | None:
    if ranks is None:
        return None
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
    raw_when_cheaper: bool = False,
    entropy_scale: Scalar | float | None = None,
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
        factors may be cut to (default `max_rank`: every width, each rank sent exactly).
      raw_when_cheaper: send a boundary's activation (and its gradient) as is, exactly, when its
        cut factors would be as many bytes or more: w (rows + features) x 4 >= rows x features x
        itemsize (default False: factors at every rank).
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
    itemsize = jnp.dtype(inputs.dtype).itemsize
    max_rank = _check_ranks(ranks, stages, max_rank, rows, feats)
    s = lax.axis_index(axis_name)
    boundary = jnp.arange(stages - 1)

    def tick(received, t):
        fresh = lax.dynamic_index_in_dim(inputs, jnp.minimum(t, micro - 1), 0, keepdims=False)
        x = jnp.where(s == 0, fresh, received)
        y = stage_fn(params, x)
        live = (boundary <= t) & (t < boundary + micro)  # stage b holds a real micro-batch
        sent = _stage_send(y, axis_name, ranks, max_rank, buckets, raw_when_cheaper, live=live)
        return sent, y

    _, ys = lax.scan(tick, jnp.zeros_like(inputs[0]), jnp.arange(micro + stages - 1))
    outputs = jnp.where(s == stages - 1, lax.dynamic_slice_in_dim(ys, stages - 1, micro, 0), 0.0)

    # each boundary's send, the same on all its micro ticks and in both directions
    link = _make_link(stages, max_rank, buckets, raw_when_cheaper, rows, feats, itemsize)
    send_bytes, send_msgs = _branch_bytes(link, rows, feats, itemsize)
    index = jnp.concatenate([_branch_index(link, ranks, None), jnp.zeros((1,), jnp.int32)])
    fwd = index[jnp.minimum(s, stages - 1)]  # boundary s (none on the last stage)
    bwd = jnp.where(s > 0, index[jnp.maximum(s - 1, 0)], 0)  # boundary s - 1
    nbytes = micro * (jnp.asarray(send_bytes)[fwd] + jnp.asarray(send_bytes)[bwd])
    messages = micro * (jnp.asarray(send_msgs)[fwd] + jnp.asarray(send_msgs)[bwd])

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
