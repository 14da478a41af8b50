"""Cache-gather attention: queries of the masked (recomputed) tokens attend to the cached
keys/values of the unmasked tokens plus the fresh keys/values of the masked tokens.

Both implementations take (batch, tokens, heads, head_dim) arrays:
  q, k_new, v_new            (B, M, H, D)  masked tokens (M padded; `valid` marks real ones)
  k_cache, v_cache           (B, N, H, D)  the template's cached keys/values of all N tokens
  keep                       (B, N)        1 where the cached token is unmasked (used), else 0

`cache_attention_reference` is plain jnp; `cache_attention` is a Pallas kernel (grid over
batch x heads x query tiles, an online softmax over tiles of the fresh and cached keys) that
runs compiled on GPU and with `interpret=True` anywhere (the CPU tests).
"""

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jaxtyping import Array, Float

NEG = -1e30


def _check(q, k_cache, v_cache, keep, k_new, v_new, valid):
    b, m, h, d = q.shape
    if k_new.shape != q.shape or v_new.shape != q.shape:
        raise ValueError(
            f"k_new, v_new: expected {q.shape} like q, got {k_new.shape}, {v_new.shape}"
        )
    if k_cache.ndim != 4 or k_cache.shape[0] != b or k_cache.shape[2:] != (h, d):
        raise ValueError(f"k_cache: expected (B={b}, N, H={h}, D={d}), got {k_cache.shape}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache: expected {k_cache.shape}, got {v_cache.shape}")
    if keep.shape != k_cache.shape[:2]:
        raise ValueError(f"keep: expected {k_cache.shape[:2]}, got {keep.shape}")
    if valid.shape != (b, m):
        raise ValueError(f"valid: expected {(b, m)}, got {valid.shape}")


def cache_attention_reference(
    q: Float[Array, "B M H D"],
    k_cache: Float[Array, "B N H D"],
    v_cache: Float[Array, "B N H D"],
    keep: Float[Array, "B N"],
    k_new: Float[Array, "B M H D"],
    v_new: Float[Array, "B M H D"],
    valid: Float[Array, "B M"],
) -> Float[Array, "B M H D"]:
    _check(q, k_cache, v_cache, keep, k_new, v_new, valid)
    scale = 1.0 / math.sqrt(q.shape[-1])
    k = jnp.concatenate([k_cache, k_new], axis=1)
    v = jnp.concatenate([v_cache, v_new], axis=1)
    use = jnp.concatenate([keep, valid], axis=1) > 0
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    logits = jnp.where(use[:, None, None, :], logits, NEG)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)


def _kernel(q_ref, kc_ref, vc_ref, keep_ref, kn_ref, vn_ref, valid_ref, o_ref, *, scale, block_n):
    """One (batch, head, query tile): an online softmax over the fresh keys of all masked
    tokens, then over the cache, each walked in tiles so nothing needs all keys at once."""
    q = q_ref[...].astype(jnp.float32) * scale  # (block_m, D)

    def over(k_ref, v_ref, use_ref, tile):
        def body(i, carry):
            m_old, l_old, acc_old = carry
            sl = pl.ds(i * tile, tile)
            use = use_ref[sl][None, :] > 0
            logits = jnp.where(use, jnp.dot(q, k_ref[sl, :].astype(jnp.float32).T), NEG)
            m_new = jnp.maximum(m_old, logits.max(axis=-1))
            # masked keys weigh exactly 0, also while every key so far is masked (m = NEG)
            p = jnp.where(use, jnp.exp(logits - m_new[:, None]), 0.0)
            alpha = jnp.exp(m_old - m_new)
            acc = acc_old * alpha[:, None] + jnp.dot(p, v_ref[sl, :].astype(jnp.float32))
            return m_new, l_old * alpha + p.sum(axis=-1), acc

        return body

    bm, d = q.shape
    carry = (jnp.full((bm,), NEG, jnp.float32), jnp.zeros((bm,), jnp.float32), jnp.zeros((bm, d)))
    carry = jax.lax.fori_loop(0, kn_ref.shape[0] // bm, over(kn_ref, vn_ref, valid_ref, bm), carry)
    n_tiles = kc_ref.shape[0] // block_n
    _, l_run, acc = jax.lax.fori_loop(0, n_tiles, over(kc_ref, vc_ref, keep_ref, block_n), carry)
    o_ref[...] = (acc / l_run[:, None]).astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("block_n", "block_m", "interpret"))
def cache_attention(
    q: Float[Array, "B M H D"],
    k_cache: Float[Array, "B N H D"],
    v_cache: Float[Array, "B N H D"],
    keep: Float[Array, "B N"],
    k_new: Float[Array, "B M H D"],
    v_new: Float[Array, "B M H D"],
    valid: Float[Array, "B M"],
    *,
    block_n: int = 16,
    block_m: int | None = None,
    interpret: bool = False,
) -> Float[Array, "B M H D"]:
    """Pallas cache-gather attention (see the module docstring): a grid over batch x heads x
    query tiles of `block_m` (default: all M), cached keys in tiles of `block_n` (must divide N)."""
    _check(q, k_cache, v_cache, keep, k_new, v_new, valid)
    b, m, h, d = q.shape
    n = k_cache.shape[1]
    if block_n < 1 or n % block_n:
        raise ValueError(f"block_n: must divide the cached token count N={n}, got {block_n}")
    block_m = m if block_m is None else block_m
    if block_m < 1 or m % block_m:
        raise ValueError(f"block_m: must divide the masked token count M={m}, got {block_m}")
    tr = lambda x: jnp.transpose(x, (0, 2, 1, 3))  # (B, H, T, D)
    kernel = functools.partial(_kernel, scale=1.0 / math.sqrt(d), block_n=block_n)
    blk_q = pl.BlockSpec((None, None, block_m, d), lambda i, j, t: (i, j, t, 0))
    blk_m = pl.BlockSpec((None, None, m, d), lambda i, j, t: (i, j, 0, 0))
    blk_n = pl.BlockSpec((None, None, n, d), lambda i, j, t: (i, j, 0, 0))
    out = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((b, h, m, d), q.dtype),
        grid=(b, h, m // block_m),
        in_specs=[
            blk_q,
            blk_n,
            blk_n,
            pl.BlockSpec((None, n), lambda i, j, t: (i, 0)),
            blk_m,
            blk_m,
            pl.BlockSpec((None, m), lambda i, j, t: (i, 0)),
        ],
        out_specs=blk_q,
        interpret=interpret,
    )(
        tr(q),
        tr(k_cache),
        tr(v_cache),
        keep.astype(jnp.float32),
        tr(k_new),
        tr(v_new),
        valid.astype(jnp.float32),
    )
    return tr(out)
