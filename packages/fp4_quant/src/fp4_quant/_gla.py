"""Gated linear attention: the recurrence (test oracle) and the chunked form used in training.

    h_t = h_{t-1} * exp(gk_t)[:, None] + k_t v_t^T,    o_t = (q_t / sqrt(d_k)) h_t

with per-key-channel log-decay gk_t <= 0. The chunked form computes every chunk's intra-chunk
scores in parallel with pairwise decays exp(b_t - b_s) (all exponents <= 0, nothing overflows),
and carries only the [d_k, d_v] state across chunks with a tiny `lax.scan`.
"""

import jax
import jax.numpy as jnp

from ._types import Array, Float


def gla_recurrent(
    q: Float[Array, "b h t dk"],
    k: Float[Array, "b h t dk"],
    v: Float[Array, "b h t dv"],
    gk: Float[Array, "b h t dk"],
) -> Float[Array, "b h t dv"]:
    scale = q.shape[-1] ** -0.5

    def step(h, inp):
        qt, kt, vt, gt = inp
        h = h * jnp.exp(gt)[..., None] + kt[..., None] * vt[..., None, :]
        return h, jnp.einsum("bhk,bhkv->bhv", qt * scale, h)

    h0 = jnp.zeros((*q.shape[:2], q.shape[-1], v.shape[-1]), jnp.float32)
    xs = tuple(jnp.moveaxis(a.astype(jnp.float32), 2, 0) for a in (q, k, v, gk))
    _, o = jax.lax.scan(step, h0, xs)
    return jnp.moveaxis(o, 0, 2)


def gla_chunked(
    q: Float[Array, "b h t dk"],
    k: Float[Array, "b h t dk"],
    v: Float[Array, "b h t dv"],
    gk: Float[Array, "b h t dk"],
    chunk: int = 16,
) -> Float[Array, "b h t dv"]:
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    if t % chunk:
        raise ValueError(f"chunk: sequence length {t} must be a multiple of chunk={chunk}")
    n = t // chunk

    def split(a):
        return a.astype(jnp.float32).reshape(b, h, n, chunk, a.shape[-1])

    q, k, v, gk = split(q) * dk**-0.5, split(k), split(v), split(gk)
    cum = jnp.cumsum(gk, axis=3)  # within-chunk cumulative log-decay
    causal = jnp.tril(jnp.ones((chunk, chunk), bool))[:, :, None]
    diff = jnp.where(causal, cum[..., :, None, :] - cum[..., None, :, :], -jnp.inf)
    scores = jnp.sum(q[..., :, None, :] * k[..., None, :, :] * jnp.exp(diff), axis=-1)
    intra = scores @ v
    last = cum[..., -1, :]  # b h n dk
    kv = jnp.einsum("bhnsk,bhnsv->bhnkv", k * jnp.exp(last[..., None, :] - cum), v)

    def carry(state, inp):
        decay, kv_n = inp
        return state * jnp.exp(decay)[..., None] + kv_n, state

    h0 = jnp.zeros((b, h, dk, dv), jnp.float32)
    _, before = jax.lax.scan(carry, h0, (jnp.moveaxis(last, 2, 0), jnp.moveaxis(kv, 2, 0)))
    inter = jnp.einsum("bhntk,nbhkv->bhntv", q * jnp.exp(cum), before)
    return (intra + inter).reshape(b, h, t, dv)
