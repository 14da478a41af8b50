"""The E2M1 element format: rounding (nearest-even and stochastic), 4-bit codes and packing.

E2M1 magnitudes are {0, 0.5, 1, 1.5, 2, 3, 4, 6}; a code is `sign << 3 | index`. Rounding is
done arithmetically (grid step 0.5 below 2, 1 below 4, 2 above) so the same code runs inside a
Pallas kernel; it matches `astype(jnp.float4_e2m1fn)` bit for bit on finite inputs (tested).
"""

import jax
import jax.numpy as jnp

from ._types import Array, Codes, Float, Int, PRNGKey, UInt8

E2M1_MAX = 6.0
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def _grid_step(a: Array) -> Array:
    return jnp.where(a < 2.0, 0.5, jnp.where(a < 4.0, 1.0, 2.0))


def _inv_grid_step(a: Array) -> Array:
    return jnp.where(a < 2.0, 2.0, jnp.where(a < 4.0, 1.0, 0.5))


def key_seed(key: PRNGKey, salt: int | Int[Array, ""] = 0) -> Array:
    """Two uint32 words from a typed or raw key, mixed with `salt` by cheap integer hashing
    (no threefry: derived streams for each GEMM operand cost nothing to compile)."""
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    seed = data.ravel().astype(jnp.uint32)[:2]
    mix = jnp.asarray(salt).astype(jnp.uint32) * jnp.uint32(0x9E3779B1) + jnp.uint32(0x7F4A7C15)
    seed = seed ^ jnp.stack([mix, (mix << 7) | (mix >> 25)])
    seed = seed * jnp.uint32(0x85EBCA6B)
    return seed ^ (seed >> 13)


def uniform_bits(key: PRNGKey, shape: tuple[int, ...]) -> Float[Array, "*shape"]:
    """Uniform [0, 1) floats from XLA's RngBitGenerator seeded by `key`.

    Stochastic rounding needs one random number per element; threefry (`jax.random.uniform`)
    multiplies compile time of a training step several times on CPU, the bit generator does not.
    """
    seed = key_seed(key)
    seed = jnp.concatenate([seed, seed ^ jnp.uint32(0x9E3779B9)])
    bits = jax.lax.rng_bit_generator(seed, shape, dtype=jnp.uint32)[1]
    return (bits >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def round_to_e2m1(
    v: Float[Array, "*shape"], *, rounding: str = "nearest", key: PRNGKey | None = None
) -> Float[Array, "*shape"]:
    """Round already-scaled values to the E2M1 grid, saturating at +-6 (values stay float).

    `rounding="nearest"` is round-half-to-even; `"stochastic"` rounds up with probability equal
    to the distance to the lower grid point over the grid step (unbiased inside the range), using
    `key`. NaN stays NaN here: callers decide how to report it.
    """
    a = jnp.minimum(jnp.abs(v), E2M1_MAX)
    step, inv_step = _grid_step(a), _inv_grid_step(a)  # powers of two: * inv_step == / step
    if rounding == "nearest":
        q = jnp.round(a * inv_step) * step
    else:
        lo = jnp.floor(a * inv_step) * step
        frac = (a - lo) * inv_step
        u = uniform_bits(key, a.shape)
        q = jnp.minimum(lo + jnp.where(u < frac, step, 0.0), E2M1_MAX)
    return jnp.where(v < 0, -q, q)  # -0.0 rounds to +0 (no `signbit`: see `_nvfp4_fast`)


def e2m1_encode(q: Float[Array, "*shape"]) -> Codes:
    """Codes (uint8 in [0, 16)) of values already on the E2M1 grid; NaN maps to -0 (code 8)."""
    a = jnp.abs(q)
    idx = jnp.where(a < 2.0, a * 2.0, jnp.where(a < 4.0, a + 2.0, a * 0.5 + 4.0))
    idx = jnp.nan_to_num(idx, nan=0.0)
    sign = (jax.lax.bitcast_convert_type(q, jnp.uint32) >> 31).astype(bool) | jnp.isnan(q)
    return (idx.astype(jnp.uint8) + jnp.where(sign, 8, 0).astype(jnp.uint8)).astype(jnp.uint8)


def e2m1_decode(codes: Codes) -> Float[Array, "*shape"]:
    """Values of 4-bit codes (arithmetic, no lookup table, so it also runs inside kernels)."""
    c = codes.astype(jnp.int32)
    idx = (c & 7).astype(jnp.float32)
    mag = jnp.where(idx < 4, idx * 0.5, jnp.where(idx < 7, idx - 2.0, 6.0))
    return jnp.where(c >= 8, -mag, mag)


def pack_e2m1(codes: UInt8[Array, "*rest cols"]) -> UInt8[Array, "*rest half"]:
    """Two codes per byte along the last axis: element 2i in the low nibble, 2i+1 in the high."""
    pairs = codes.reshape(*codes.shape[:-1], codes.shape[-1] // 2, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).astype(jnp.uint8)


def unpack_e2m1(packed: UInt8[Array, "*rest half"]) -> UInt8[Array, "*rest cols"]:
    """Inverse of `pack_e2m1` (exact)."""
    lo = packed & 0x0F
    hi = packed >> 4
    return jnp.stack([lo, hi], axis=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)
