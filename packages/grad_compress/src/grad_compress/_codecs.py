"""Element-wise compressors with error feedback: top-k, random-k, EF-signSGD, QSGD / int8.

Each is a `Codec` (encode a flat vector into the arrays that are actually sent, decode them back)
lifted into a `Compressor` by `codec_compressor`, which adds error feedback (Stich et al. 2018;
Karimireddy et al. 2019), the per-tensor policy and the collective:

- sparse / per-worker payloads (top-k indices + values, sign bits + scale, int8 + norm) are
  `all_gather`-ed and every worker decodes and averages all of them;
- random-k with a key shared by all workers selects the same indices everywhere, so its values
  are linear and are `psum`-ed (indices are never sent).
"""

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from . import _stats
from ._base import Compressor, check_float_tree, check_key
from ._policy import Policy, size_policy
from ._types import Flat, Key, PyTree, Vector


class Codec(NamedTuple):
    """encode(x, key) -> (sent, aux); decode(sent, aux, d) -> x_hat. `aux` is never sent."""

    encode: Callable[[Vector, Any], tuple[PyTree, PyTree]]
    decode: Callable[[PyTree, PyTree, int], Vector]
    linear: bool  # True: psum the sent arrays; False: all_gather them
    randomised: bool
    shared_key: bool  # True: every worker uses the same key (same random choices)


class EFState(NamedTuple):
    """Per-device error-feedback memory: one flat residual per leaf ((0,) where not compressed)."""

    error: tuple[Flat, ...]
    step: jax.Array


def _count(d: int, ratio: float, name: str) -> int:
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"{name}: expected a fraction in (0, 1], got {ratio!r}")
    return max(1, math.ceil(ratio * d))


def topk_codec(ratio: float) -> Callable[[int], Codec]:
    """Keep the `ceil(ratio d)` largest-magnitude entries; send values (f32) and indices (i32)."""
    _count(1, ratio, "ratio")

    def make(d: int) -> Codec:
        k = _count(d, ratio, "ratio")

        def encode(x, key):
            del key
            _, idx = jax.lax.top_k(jnp.abs(x), k)
            return (x[idx], idx.astype(jnp.int32)), None

        def decode(sent, aux, d):
            values, idx = sent
            return jnp.zeros((d,), values.dtype).at[idx].add(values)

        return Codec(encode, decode, linear=False, randomised=False, shared_key=False)

    return make


def randomk_codec(ratio: float) -> Callable[[int], Codec]:
    """Keep `ceil(ratio d)` entries picked with a key shared by all workers; values are sent."""
    _count(1, ratio, "ratio")

    def make(d: int) -> Codec:
        k = _count(d, ratio, "ratio")

        def encode(x, key):
            idx = jax.random.choice(key, d, (k,), replace=False)
            return x[idx], idx

        def decode(sent, aux, d):
            return jnp.zeros((d,), sent.dtype).at[aux].set(sent)

        return Codec(encode, decode, linear=True, randomised=True, shared_key=True)

    return make


def pack_signs(x: Vector) -> jax.Array:
    """Sign bits (1 = non-negative) packed 8 per uint8, zero-padded to a multiple of 8."""
    bits = (x >= 0).astype(jnp.uint8)
    pad = (-bits.shape[0]) % 8
    bits = jnp.pad(bits, (0, pad)).reshape(-1, 8)
    weights = (1 << jnp.arange(8, dtype=jnp.uint8)).astype(jnp.uint8)
    return jnp.sum(bits * weights[None, :], axis=1, dtype=jnp.uint8)


def unpack_signs(packed: jax.Array, d: int) -> Vector:
    """Inverse of `pack_signs`: +1 / -1 floats of length d."""
    bits = (packed[:, None] >> jnp.arange(8, dtype=jnp.uint8)[None, :]) & jnp.uint8(1)
    return bits.reshape(-1)[:d].astype(jnp.float32) * 2.0 - 1.0


def sign_codec() -> Callable[[int], Codec]:
    """Scaled sign (EF-signSGD): 1 bit per entry plus the scale ||x||_1 / d."""

    def make(d: int) -> Codec:
        def encode(x, key):
            del key
            scale = jnp.mean(jnp.abs(x)).astype(jnp.float32)
            return (pack_signs(x), scale), None

        def decode(sent, aux, d):
            packed, scale = sent
            return unpack_signs(packed, d) * scale

        return Codec(encode, decode, linear=False, randomised=False, shared_key=False)

    return make


def qsgd_codec(levels: int = 127) -> Callable[[int], Codec]:
    """QSGD stochastic quantization to `levels` magnitudes (int8 payload + one f32 L2 norm).

    q_i = sign(x_i) * floor(|x_i| / ||x|| * s + u_i), u ~ U[0, 1): unbiased, E[decode] = x.
    """
    if not isinstance(levels, int) or not 1 <= levels <= 127:
        raise ValueError(f"levels: expected an int in [1, 127] (int8 payload), got {levels!r}")

    def make(d: int) -> Codec:
        def encode(x, key):
            norm = jnp.linalg.norm(x).astype(jnp.float32)
            safe = jnp.where(norm > 0, norm, 1.0)
            scaled = jnp.abs(x) / safe * levels
            u = jax.random.uniform(key, x.shape, dtype=scaled.dtype)
            q = jnp.minimum(jnp.floor(scaled + u), levels) * jnp.sign(x)
            return (q.astype(jnp.int8), norm), None

        def decode(sent, aux, d):
            q, norm = sent
            return q.astype(jnp.float32) * (norm / levels)

        return Codec(encode, decode, linear=False, randomised=True, shared_key=False)

    return make


def _check_layout(leaves: list, errors: tuple, policy: Policy) -> None:
    if len(leaves) != len(errors):
        raise ValueError(
            f"grads: expected {len(errors)} leaves (as given to init), got {len(leaves)}"
        )
    for i, (g, e) in enumerate(zip(leaves, errors, strict=True)):
        want = g.size if policy(tuple(g.shape)) else 0
        if e.shape[0] != want:
            raise ValueError(
                f"grads: leaf {i} has shape {tuple(g.shape)}, which does not match the state "
                f"built by init (error buffer of {e.shape[0]} entries)"
            )


def codec_compressor(
    make_codec: Callable[[int], Codec],
    *,
    policy: Policy | None = None,
    error_feedback: bool = True,
) -> Compressor:
    """Lift a codec into a `Compressor` with error feedback, a per-tensor policy and a collective.

    Tensors rejected by `policy` (default: matrices with >= 1024 entries are compressed) are
    averaged uncompressed with `pmean` and counted as full-precision all-reduce bytes.
    """
    policy = policy or size_policy()

    def init(params: PyTree) -> EFState:
        leaves = check_float_tree(params, "params")
        errs = tuple(jnp.zeros((x.size if policy(tuple(x.shape)) else 0,), x.dtype) for x in leaves)
        return EFState(errs, jnp.zeros((), jnp.int32))

    def update(grads: PyTree, state: EFState, *, key: Key | None = None, axis_name=None):
        leaves, treedef = jax.tree.flatten(grads)
        _check_layout(leaves, state.error, policy)
        codecs = [make_codec(x.size) if policy(tuple(x.shape)) else None for x in leaves]
        check_key(key, any(c is not None and c.randomised for c in codecs))
        keys = list(jax.random.split(key, len(leaves))) if key is not None else [None] * len(leaves)
        outs, errs, stats = list(leaves), list(state.error), _stats.CommStats.zeros()
        full = [i for i, c in enumerate(codecs) if c is None]
        for i, mean in zip(
            full, _stats.pmean_bucket([leaves[i] for i in full], axis_name), strict=True
        ):
            outs[i] = mean
        if full:  # uncompressed tensors travel in one bucketed all-reduce
            stats = stats + _stats.allreduce_stats(
                sum(_stats.payload_nbytes(leaves[i]) for i in full)
            )
        for i, (g, e, codec, k) in enumerate(zip(leaves, state.error, codecs, keys, strict=True)):
            if codec is None:
                continue
            x = g.reshape(-1) + e if error_feedback else g.reshape(-1)
            if k is not None and not codec.shared_key:
                k = _stats.fold_in_device(k, axis_name)
            sent, aux = codec.encode(x, k)
            local = codec.decode(sent, aux, x.size)
            nbytes = _stats.payload_nbytes(sent)
            if codec.linear:
                mean = codec.decode(_stats.pmean(sent, axis_name), aux, x.size)
                stats = stats + _stats.allreduce_stats(nbytes)
            else:
                gathered = _stats.all_gather(sent, axis_name)
                decode = functools.partial(codec.decode, aux=aux, d=x.size)
                decoded = jax.vmap(decode)(gathered)
                mean = jnp.mean(decoded, axis=0)
                stats = stats + _stats.allgather_stats(nbytes)
            outs[i] = mean.reshape(g.shape).astype(g.dtype)
            errs[i] = (x - local).astype(e.dtype) if error_feedback else e
        new_state = EFState(tuple(errs), state.step + 1)
        return jax.tree.unflatten(treedef, outs), new_state, stats

    return Compressor(init, update)


def topk(ratio: float, *, policy: Policy | None = None, error_feedback: bool = True) -> Compressor:
    """Top-k sparsification with error feedback (sends f32 values + i32 indices)."""
    return codec_compressor(topk_codec(ratio), policy=policy, error_feedback=error_feedback)


def randomk(
    ratio: float, *, policy: Policy | None = None, error_feedback: bool = True
) -> Compressor:
    """Random-k sparsification with a shared key (values are psum-ed); needs `key` in update."""
    return codec_compressor(randomk_codec(ratio), policy=policy, error_feedback=error_feedback)


def sign_sgd(*, policy: Policy | None = None, error_feedback: bool = True) -> Compressor:
    """EF-signSGD: scaled 1-bit signs with error feedback (Karimireddy et al. 2019)."""
    return codec_compressor(sign_codec(), policy=policy, error_feedback=error_feedback)


def qsgd(
    levels: int = 127, *, policy: Policy | None = None, error_feedback: bool = False
) -> Compressor:
    """QSGD / int8 stochastic quantization (unbiased; error feedback off by default)."""
    return codec_compressor(qsgd_codec(levels), policy=policy, error_feedback=error_feedback)


def no_compression() -> Compressor:
    """The baseline: a full-precision `pmean` of every tensor (state is just a step counter)."""

    def init(params: PyTree) -> EFState:
        leaves = check_float_tree(params, "params")
        return EFState(tuple(jnp.zeros((0,), x.dtype) for x in leaves), jnp.zeros((), jnp.int32))

    def update(grads: PyTree, state: EFState, *, key: Key | None = None, axis_name=None):
        del key
        leaves = jax.tree.leaves(grads)
        if len(leaves) != len(state.error):
            raise ValueError(
                f"grads: expected {len(state.error)} leaves (as given to init), got {len(leaves)}"
            )
        nbytes = sum(_stats.payload_nbytes(x) for x in leaves)
        stats = _stats.allreduce_stats(nbytes)  # one bucketed all-reduce
        mean = jax.tree.unflatten(jax.tree.structure(grads), _stats.pmean_bucket(leaves, axis_name))
        return mean, EFState(state.error, state.step + 1), stats

    return Compressor(init, update)
