"""PowerSGD (Vogels et al. 2019): rank-r power iteration with warm start and error feedback.

Per compressed matrix M = G + E (gradient plus the error-feedback memory), with Q from the
previous step (warm start):

    P = M Q;  P <- mean_dp(P);  P <- orthogonalize(P);  Q = M^T P;  Q <- mean_dp(Q)
    mean gradient ~= P Q^T;     E <- M - P Q^T

Both P and Q are linear in M, so they are all-reduced with `psum` (mean) inside `jax.shard_map`.
Ranks may change between steps (EDGC): factors are stored with `max_rank` columns and columns
beyond a tensor's current rank are masked to zero. A column that becomes active again restarts
from a fixed random draw. Only the active columns travel: every leaf's first r_i columns are
packed back to back into one flat payload, which is cut to the smallest of a few static sizes
("buckets", `lax.switch` over them, so one compiled step serves every rank without recompiling)
that holds them, and that cut payload is what `pmean` gets and what `CommStats` counts. With
the default `2 * max_rank` buckets a uniform rank r sends exactly r (n + m) values per matrix;
mixed per-leaf ranks pad the payload by less than half a rank-1 payload.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _stats
from ._base import Compressor, check_float_tree
from ._policy import Policy, low_rank_policy, matrix_shape
from ._types import Array, Flat, Float, Key, Matrix, PyTree, Ranks


class PowerSGDState(NamedTuple):
    """Per-device state: error memory (flat, (0,) if not compressed) and warm-start Q per leaf."""

    error: tuple[Flat, ...]
    q: tuple[Float[Array, "m r"], ...]
    q_init: tuple[Float[Array, "m r"], ...]
    step: jax.Array


def orthogonalize(p: Matrix, *, mask=None, eps: float = 1e-6) -> Matrix:
    """Orthonormal columns spanning `p`'s leading columns (Gram-Schmidt, computed by QR).

    Householder QR with the signs fixed so that diag(R) > 0 gives exactly Gram-Schmidt's result.
    Columns that are switched off by `mask` (masked ranks) or numerically dependent stay zero.
    """
    q, r = jnp.linalg.qr(p)
    d = jnp.diagonal(r)
    keep = jnp.abs(d) > eps * jnp.max(jnp.abs(d))
    if mask is not None:
        keep = keep & mask
    sign = jnp.where(d < 0, -1.0, 1.0).astype(q.dtype)
    return jnp.where(keep[None, :], q * sign[None, :], 0.0)


def bucket_sizes(total: int, buckets: int) -> tuple[int, ...]:
    """`buckets` increasing payload sizes, ceil(j * total / buckets) for j = 1..buckets."""
    return tuple(sorted({-(-j * total // buckets) for j in range(1, buckets + 1)}))


def packed_pmean(
    factors: list[Float[Array, "_k r"]], ranks, axis_name: str | None, sizes: tuple[int, ...]
) -> tuple[list[Float[Array, "_k r"]], jax.Array | np.integer]:
    """Mean over `axis_name` of each factor's first `ranks[i]` columns (the others must be zero).

    The active columns (column-major, leaf after leaf) are packed into one flat buffer, which is
    cut to the smallest size in `sizes` that holds them: that cut payload is the only thing sent
    (one collective). `ranks` may be traced (`lax.switch` over the sizes) or Python ints (the
    size is chosen while tracing). Returns the means and the bytes sent.
    """
    dtype = jnp.result_type(*factors)
    max_rank = factors[0].shape[1]
    lengths = [f.shape[0] for f in factors]
    total = max_rank * sum(lengths)
    static = all(isinstance(r, int) for r in ranks)
    xp = np if static else jnp
    used = [r * k for r, k in zip(ranks, lengths, strict=True)]
    sizes_arr = xp.asarray(sizes)
    index = xp.minimum(xp.searchsorted(sizes_arr, sum(used)), len(sizes) - 1)
    nbytes = sizes_arr[index] * jnp.dtype(dtype).itemsize
    if axis_name is None:  # one worker: nothing is sent, the mean is the factor itself
        return list(factors), nbytes
    offsets = [0]
    for u in used[:-1]:
        offsets.append(offsets[-1] + u)
    buf = jnp.zeros((total,), dtype)
    for f, o in zip(factors, offsets, strict=True):
        # the columns beyond the rank are zero; the next leaf's segment overwrites them
        buf = lax.dynamic_update_slice(buf, f.T.reshape(-1).astype(dtype), (o,))

    def send(size: int):
        def branch(buf):
            sent = _stats.pmean(buf[:size], axis_name)
            return jnp.concatenate([sent, jnp.zeros((total - size,), dtype)])

        return branch

    if static:
        buf = send(sizes[int(index)])(buf)
    else:
        buf = lax.switch(index, [send(n) for n in sizes], buf)
    outs = []
    for f, o, r, k in zip(factors, offsets, ranks, lengths, strict=True):
        seg = lax.dynamic_slice(buf, (o,), (max_rank * k,)).reshape(max_rank, k).T
        outs.append(jnp.where(jnp.arange(max_rank)[None, :] < r, seg, 0.0).astype(f.dtype))
    return outs, nbytes


def low_rank_round(
    m: Matrix, q: Float[Array, "m r"], rank, *, axis_name: str | None
) -> tuple[Matrix, Float[Array, "m r"]]:
    """One PowerSGD round on one matrix `m` with warm start `q`; returns (P Q^T, new Q).

    `powersgd` runs the same round for all matrices at once with batched collectives.
    """
    mask = jnp.arange(q.shape[1]) < rank
    q = q * mask.astype(m.dtype)[None, :]
    p = _stats.pmean(m @ q, axis_name)
    p = orthogonalize(p, mask=mask)
    q_new = _stats.pmean(m.T @ p, axis_name)
    return p @ q_new.T, q_new


def powersgd(
    rank: int = 1,
    *,
    max_rank: int | None = None,
    start_step: int = 0,
    policy: Policy | None = None,
    error_feedback: bool = True,
    seed: int = 0,
    buckets: int | None = None,
) -> Compressor:
    """PowerSGD compressor.

    Args:
      rank: the rank used when `update` gets no `ranks`.
      max_rank: columns stored per factor (>= every rank passed to `update`); default `rank`.
      start_step: steps before compression starts (full-precision mean, as torch's hook does).
      policy: which tensors to compress; default PowerSGD's rule for `max_rank`.
      error_feedback: keep the residual M - P Q^T and add it to the next gradient.
      seed: seed of the fixed random initial Q (identical on every worker).
      buckets: how many static payload sizes the P (and the Q) all-reduce is cut to (default
        `2 * max_rank`: uniform ranks are sent exactly; mixed ranks pad < half a rank-1 payload).

    `update(grads, state, *, key=None, axis_name=None, ranks=None)`: `ranks` is an int array with
    one rank per leaf of `grads` (ignored for leaves not compressed), each in [1, max_rank].
    """
    max_rank = rank if max_rank is None else max_rank
    for name, v in (("rank", rank), ("max_rank", max_rank)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if rank > max_rank:
        raise ValueError(f"rank: expected <= max_rank={max_rank}, got {rank}")
    if not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"start_step: expected a non-negative int, got {start_step!r}")
    buckets = 2 * max_rank if buckets is None else buckets
    if not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"buckets: expected a positive int, got {buckets!r}")
    policy = policy or low_rank_policy(max_rank)

    def init(params: PyTree) -> PowerSGDState:
        leaves = check_float_tree(params, "params")
        keys = jax.random.split(jax.random.key(seed), len(leaves))
        errs, qs = [], []
        for x, k in zip(leaves, keys, strict=True):
            if policy(tuple(x.shape)):
                _, m = matrix_shape(tuple(x.shape))
                errs.append(jnp.zeros((x.size,), x.dtype))
                draw = lambda c, k=k, m=m, dt=x.dtype: jax.random.normal(
                    jax.random.fold_in(k, c), (m,), dt
                )
                # column j depends only on (seed, leaf, j), never on max_rank
                qs.append(jax.vmap(draw, out_axes=1)(jnp.arange(max_rank)))
            else:
                errs.append(jnp.zeros((0,), x.dtype))
                qs.append(jnp.zeros((0, max_rank), x.dtype))
        return PowerSGDState(tuple(errs), tuple(qs), tuple(qs), jnp.zeros((), jnp.int32))

    def _check(leaves, state: PowerSGDState) -> None:
        if len(leaves) != len(state.error):
            raise ValueError(
                f"grads: expected {len(state.error)} leaves (as given to init), got {len(leaves)}"
            )
        for i, (g, e) in enumerate(zip(leaves, state.error, strict=True)):
            if e.shape[0] != (g.size if policy(tuple(g.shape)) else 0):
                raise ValueError(
                    f"grads: leaf {i} has shape {tuple(g.shape)}, which does not match the "
                    "state built by init"
                )

    def _compressed(leaves, state: PowerSGDState, ranks, axis_name):
        """Batched PowerSGD: all P factors in one all-reduce, all Q factors in another.

        `ranks`: one rank per leaf, Python ints (static) or a traced int array.
        """
        low = [i for i, e in enumerate(state.error) if e.shape[0]]
        full = [i for i, e in enumerate(state.error) if not e.shape[0]]
        outs, errs, qs = list(leaves), list(state.error), list(state.q)
        stats = _stats.CommStats.zeros()
        for i, mean in zip(
            full, _stats.pmean_bucket([leaves[i] for i in full], axis_name), strict=True
        ):
            outs[i] = mean
        if full:
            nbytes = sum(_stats.payload_nbytes(leaves[i]) for i in full)
            stats = stats + _stats.allreduce_stats(nbytes)
        if not low:
            return outs, tuple(errs), tuple(qs), stats
        mats, masked, masks = {}, {}, {}
        for i in low:
            n, m = matrix_shape(tuple(leaves[i].shape))
            e = state.error[i].reshape(n, m)
            mats[i] = leaves[i].reshape(n, m) + (e if error_feedback else 0.0)
            # Warm start; a column switched back on restarts from the fixed random draw.
            q = state.q[i]
            q = jnp.where(jnp.sum(q * q, axis=0, keepdims=True) == 0, state.q_init[i], q)
            masks[i] = jnp.arange(max_rank) < ranks[i]
            masked[i] = q * masks[i].astype(q.dtype)[None, :]
        low_ranks = [ranks[i] for i in low]
        sizes_p = bucket_sizes(max_rank * sum(mats[i].shape[0] for i in low), buckets)
        sizes_q = bucket_sizes(max_rank * sum(mats[i].shape[1] for i in low), buckets)
        ps, bytes_p = packed_pmean(
            [mats[i] @ masked[i] for i in low], low_ranks, axis_name, sizes_p
        )
        ps = [orthogonalize(p, mask=masks[i]) for i, p in zip(low, ps, strict=True)]
        new_qs, bytes_q = packed_pmean(
            [mats[i].T @ p for i, p in zip(low, ps, strict=True)], low_ranks, axis_name, sizes_q
        )
        for i, p, q_new in zip(low, ps, new_qs, strict=True):
            g = leaves[i]
            approx = p @ q_new.T
            outs[i] = approx.reshape(g.shape).astype(g.dtype)
            if error_feedback:
                errs[i] = (mats[i] - approx).reshape(-1).astype(state.error[i].dtype)
            qs[i] = q_new
        stats = stats + _stats.allreduce_stats(bytes_p + bytes_q, messages=2)
        return outs, tuple(errs), tuple(qs), stats

    def _uncompressed(leaves, state: PowerSGDState, ranks, axis_name):
        del ranks
        outs = _stats.pmean_bucket(list(leaves), axis_name)
        nbytes = sum(_stats.payload_nbytes(g) for g in leaves)
        return outs, state.error, state.q, _stats.allreduce_stats(nbytes)

    def update(
        grads: PyTree,
        state: PowerSGDState,
        *,
        key: Key | None = None,
        axis_name: str | None = None,
        ranks: Ranks | None = None,
    ):
        del key
        leaves, treedef = jax.tree.flatten(grads)
        _check(leaves, state)
        if ranks is None:  # static: the payload size is fixed while tracing
            ranks = [rank] * len(leaves)
        else:
            ranks = jnp.asarray(ranks)
            if ranks.shape != (len(leaves),):
                raise ValueError(f"ranks: expected shape ({len(leaves)},), got {ranks.shape}")
            ranks = jnp.clip(ranks, 1, max_rank).astype(jnp.int32)
        if start_step > 0:
            outs, errs, qs, stats = lax.cond(
                state.step < start_step,
                lambda: _uncompressed(leaves, state, ranks, axis_name),
                lambda: _compressed(leaves, state, ranks, axis_name),
            )
        else:
            outs, errs, qs, stats = _compressed(leaves, state, ranks, axis_name)
        new_state = PowerSGDState(errs, qs, state.q_init, state.step + 1)
        return jax.tree.unflatten(treedef, outs), new_state, stats

    return Compressor(init, update)
