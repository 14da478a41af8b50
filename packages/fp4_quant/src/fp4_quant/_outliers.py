"""Outlier analysis: channel magnitudes, kurtosis, hot channels and their persistence,
flush-to-zero rate and per-projection quantization sensitivity."""

from functools import partial

import jax
import jax.numpy as jnp

from ._matmul import MatmulRecipe, fake_quantize
from ._types import Array, Float, Int


def _rows(x: Array) -> Array:
    return x.reshape(-1, x.shape[-1]).astype(jnp.float32)


@jax.jit
def channel_stats(x: Float[Array, "*batch c"]) -> dict[str, Float[Array, " c"]]:
    """Per-channel (last axis) mean |x|, max |x| and RMS."""
    a = jnp.abs(_rows(x))
    return {
        "mean_abs": jnp.mean(a, axis=0),
        "max_abs": jnp.max(a, axis=0),
        "rms": jnp.sqrt(jnp.mean(a * a, axis=0)),
    }


@jax.jit
def kurtosis(x: Array) -> Float[Array, ""]:
    """Pearson kurtosis E[(x-mu)^4] / sigma^4 over all entries (3 for a Gaussian)."""
    v = x.astype(jnp.float32).ravel()
    c = v - jnp.mean(v)
    m2 = jnp.mean(c * c)
    return jnp.mean(c**4) / jnp.maximum(m2 * m2, 1e-30)


@partial(jax.jit, static_argnames="k")
def top_k_channels(x: Float[Array, "*batch c"], k: int) -> Int[Array, " k"]:
    """Indices of the k channels with the largest mean |x| (sorted, largest first)."""
    return jnp.argsort(-channel_stats(x)["mean_abs"])[:k].astype(jnp.int32)


@jax.jit
def topk_overlap(a: Int[Array, " k"], b: Int[Array, " k"]) -> Float[Array, ""]:
    """|a & b| / k for two top-k index sets of the same size."""
    return jnp.mean(jnp.any(a[:, None] == b[None, :], axis=1).astype(jnp.float32))


def topk_persistence(sets: Int[Array, "t k"]) -> dict[str, Float[Array, " t1"]]:
    """Overlap of consecutive top-k sets (`consecutive`, length t-1) and of each set with the
    last one (`with_final`, length t): near 1 once hot channels have settled."""
    consecutive = jnp.stack([topk_overlap(sets[i], sets[i + 1]) for i in range(sets.shape[0] - 1)])
    with_final = jnp.stack([topk_overlap(s, sets[-1]) for s in sets])
    return {"consecutive": consecutive, "with_final": with_final}


@partial(jax.jit, static_argnames="recipe")
def flush_to_zero_rate(x: Float[Array, "rows cols"], recipe: MatmulRecipe) -> Float[Array, ""]:
    """Fraction of non-zero entries that quantize to exactly zero."""
    x2 = _rows(x)
    q = fake_quantize(x2, recipe)
    nz = x2 != 0
    return jnp.sum(nz & (q == 0)) / jnp.maximum(jnp.sum(nz), 1)


@partial(jax.jit, static_argnames="recipe")
def quantization_sensitivity(
    x: Float[Array, "*batch k"],
    w: Float[Array, "k n"],
    recipe: MatmulRecipe,
    hot_channels: Int[Array, " h"] | None = None,
) -> Float[Array, ""]:
    """Relative forward-GEMM error ||Q(x) Q(w) - x w|| / ||x w|| (optionally HCP-patched)."""
    from ._matmul import _patch

    x2 = _rows(x)
    w = w.astype(jnp.float32)
    xq = fake_quantize(x2, recipe)
    wq = fake_quantize(w.T, recipe, weight=True).T
    ch = jnp.zeros((0,), jnp.int32) if hot_channels is None else hot_channels
    y = _patch(xq, x2, wq, w, ch)
    ref = x2 @ w
    return jnp.linalg.norm(y - ref) / jnp.maximum(jnp.linalg.norm(ref), 1e-30)
