"""Cache-gather attention: queries of the masked (recomputed) tokens attend to the cached
keys/values of the unmasked tokens plus the fresh keys/values of the masked tokens.

Both implementations take (batch, tokens, heads, head_dim) arrays:
  q, k_new, v_new            (B, M, H, D)  masked tokens (M padded; `valid` marks real ones)
  k_cache, v_cache           (B, N, H, D)  the template's cached keys/values of all N tokens
  keep                       (B, N)        1 where the cached token is unmasked (used), else 0

`cache_attention_reference` is plain jnp; `cache_attention` is a Pallas kernel (grid over
batch x heads, an online softmax over `block_n`-sized tiles of the cache) that runs compiled on
GPU and with `interpret=True` anywhere (the CPU tests).
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
    q = q_ref[...].astype(jnp.float32) * scale  # (M, D)
    mq = q.shape[0]
    # the fresh keys of the masked tokens start the running softmax
    ln = jnp.dot(q, kn_ref[...].astype(jnp.float32).T)
    ln = jnp.where(valid_ref[...][None, :] > 0, ln, NEG)
    m_run = ln.max(axis=-1)
    p = jnp.exp(ln - m_run[:, None])
    l_run = p.sum(axis=-1)
    acc = jnp.dot(p, vn_ref[...].astype(jnp.float32))
    n = kc_ref.shape[0]

    def body(i, carry):
        m_old, l_old, acc_old = carry
        sl = pl.ds(i * block_n, block_n)
        kc = kc_ref[sl, :].astype(jnp.float32)
        vc = vc_ref[sl, :].astype(jnp.float32)
        lc = jnp.dot(q, kc.T)
        lc = jnp.where(keep_ref[sl][None, :] > 0, lc, NEG)
        m_new = jnp.maximum(m_old, lc.max(axis=-1))
        alpha = jnp.exp(m_old - m_new)
        pc = jnp.exp(lc - m_new[:, None])
        return m_new, l_old * alpha + pc.sum(axis=-1), acc_old * alpha[:, None] + jnp.dot(pc, vc)

    del mq
    m_run, l_run, acc = jax.lax.fori_loop(0, n // block_n, body, (m_run, l_run, acc))
    o_ref[...] = (acc / l_run[:, None]).astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("block_n", "interpret"))
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
    interpret: bool = False,
) -> Float[Array, "B M H D"]:
    """Pallas cache-gather attention (see the module docstring); `block_n` must divide N."""
    _check(q, k_cache, v_cache, keep, k_new, v_new, valid)
    b, m, h, d = q.shape
    n = k_cache.shape[1]
    if block_n < 1 or n % block_n:
        raise ValueError(f"block_n: must divide the cached token count N={n}, got {block_n}")
    tr = lambda x: jnp.transpose(x, (0, 2, 1, 3))  # (B, H, T, D)
    kernel = functools.partial(_kernel, scale=1.0 / math.sqrt(d), block_n=block_n)
    blk_m = pl.BlockSpec((None, None, m, d), lambda i, j: (i, j, 0, 0))
    blk_n = pl.BlockSpec((None, None, n, d), lambda i, j: (i, j, 0, 0))
    out = pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((b, h, m, d), q.dtype),
        grid=(b, h),
        in_specs=[
            blk_m,
            blk_n,
            blk_n,
            pl.BlockSpec((None, n), lambda i, j: (i, 0)),
            blk_m,
            blk_m,
            pl.BlockSpec((None, m), lambda i, j: (i, 0)),
        ],
        out_specs=blk_m,
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
