"""Subsampled gradient entropy with fixed histogram bins (EDGC's gradient data sampler).

Entropy is the Shannon entropy (bits) of the histogram of gradient entries over *fixed* bin
edges. Fixed edges matter twice: data-derived edges bias a subsample's entropy, and with a fixed
bin width Delta the histogram entropy tracks the differential entropy, H ~= h - log2(Delta), so
entropy *differences* between steps are physical (this is what the rank model uses).
Subsampling takes `ceil(fraction * d)` entries (with replacement) from each tensor, which cuts the
cost roughly in proportion to `fraction`; EDGC also measures only every `period` steps.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._types import Edges, Key, PyTree, Scalar, Vector


class EntropyEstimate(NamedTuple):
    bits: Scalar
    variance: Scalar


def fixed_edges(scale: float, *, bins: int = 256, width: float = 4.0) -> Edges:
    """`bins + 1` evenly spaced edges on [-width * scale, width * scale]."""
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins: expected an int >= 2, got {bins!r}")
    if not (math.isfinite(float(scale)) and float(scale) > 0):
        raise ValueError(f"scale: expected a positive finite number, got {scale!r}")
    return jnp.linspace(-width * scale, width * scale, bins + 1, dtype=jnp.float32)


def histogram_entropy(x: Vector, edges: Edges) -> Scalar:
    """Shannon entropy (bits) of the histogram of `x` over `edges` (out-of-range -> end bins)."""
    bins = edges.shape[0] - 1
    idx = jnp.clip(jnp.searchsorted(edges, x.reshape(-1), side="right") - 1, 0, bins - 1)
    counts = jnp.zeros((bins,), jnp.float32).at[idx].add(1.0)
    p = counts / jnp.maximum(jnp.sum(counts), 1.0)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log2(jnp.where(p > 0, p, 1.0)), 0.0))


def uniform_histogram_entropy(x: Vector, low, high, bins: int) -> Scalar:
    """`histogram_entropy` for `bins` equal-width bins on [low, high]: O(1) binning, no search."""
    width = (high - low) / bins
    idx = jnp.clip(jnp.floor((x.reshape(-1) - low) / width), 0, bins - 1).astype(jnp.int32)
    counts = jnp.zeros((bins,), jnp.float32).at[idx].add(1.0)
    p = counts / jnp.maximum(jnp.sum(counts), 1.0)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log2(jnp.where(p > 0, p, 1.0)), 0.0))


def subsample(tree: PyTree, *, fraction: float, key: Key | None, block: int = 1) -> Vector:
    """About `fraction * size` entries of each leaf, concatenated (uniform, with replacement).

    `block=1` draws single entries; `block=B > 1` draws `ceil(fraction * size / B)` contiguous
    runs of B entries at uniform random offsets (same expected histogram, far fewer random memory
    accesses: the cheap sampler for large tensors).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: expected a number in (0, 1], got {fraction!r}")
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block: expected a positive int, got {block!r}")
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError("tree: expected at least one array to sample from")
    if fraction == 1.0:
        return jnp.concatenate([x.reshape(-1).astype(jnp.float32) for x in leaves])
    blocks = [min(block, x.size) for x in leaves]
    counts = [max(1, math.ceil(fraction * x.size / b)) for x, b in zip(leaves, blocks, strict=True)]
    u = jax.random.uniform(key, (sum(counts),))  # one random draw for all leaves
    parts, offset = [], 0
    for x, n, b in zip(leaves, counts, blocks, strict=True):
        span = x.size - b + 1
        starts = jnp.minimum((u[offset : offset + n] * span).astype(jnp.int32), span - 1)
        flat = x.reshape(-1)
        if b == 1:
            parts.append(flat[starts].astype(jnp.float32))
        else:
            runs = jax.vmap(lambda s, flat=flat, b=b: jax.lax.dynamic_slice(flat, (s,), (b,)))(
                starts
            )
            parts.append(runs.reshape(-1).astype(jnp.float32))
        offset += n
    return jnp.concatenate(parts)


def gradient_entropy(
    tree: PyTree,
    edges: Edges,
    *,
    fraction: float = 1.0,
    key: Key | None = None,
) -> EntropyEstimate:
    """Histogram entropy (bits) and variance of a gradient pytree, from a `fraction` subsample."""
    if fraction < 1.0 and key is None:
        raise ValueError("key: subsampling (fraction < 1) needs key=jax.random.key(...)")
    sample = subsample(tree, fraction=fraction, key=key)
    return EntropyEstimate(histogram_entropy(sample, edges), jnp.var(sample))
