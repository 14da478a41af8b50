"""Fast jnp path of NVFP4 quantization, written for XLA:CPU (and any backend that fuses).

Same numbers as the reference in `_nvfp4.py` (tested bit for bit); only the formulation differs:

- block absmax: one NaN-propagating max (a block max of NaN or inf flags a non-finite block
  in the same reduction), done as two pairwise maxima over adjacent elements then a 4-wide
  reduce: XLA:CPU emits a scalar loop per output for a 16-wide minor-axis reduce, the
  pairwise form vectorizes (an int32 max over the f32 bits was a little faster, but XLA
  constant-folds `bitcast_convert` of a transposed constant wrongly inside nested jits);
- E4M3 block scales by rounding the f32 mantissa to 3 bits with integer arithmetic (no f8
  conversion in the per-element loop: XLA emulates that conversion in software and would
  recompute it for each of the 16 elements that read a block's scale);
- the encode scale 1 / (s_block * s_tensor) is computed once per block; XLA keeps a divide
  out of the per-element loop, so each element costs one multiply;
- E2M1 codes as a sum of seven comparisons with the rounding midpoints (>= where the tie goes
  up to an even code, > where it goes down), no division, floor or table;
- packing in a "pair" view (x as [rows, cols/2, 2]) so the two nibbles of a byte come from one
  fused loop over bytes; no transposes anywhere.
"""

import jax
import jax.numpy as jnp

from ._types import Array, Float, UInt8

BLOCK = 16
E4M3_MAX = 448.0
E2M1_MAX = 6.0
_FLT_MIN = 2.0**-126
# (threshold, inclusive): |v| crosses the midpoint between two E2M1 magnitudes; ties go to the
# even code (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4).
_MIDPOINTS = ((0.25, False), (0.75, True), (1.25, False), (1.75, True), (2.5, False))
_MIDPOINTS += ((3.5, True), (5.0, False))


def _pairmax(b: Array) -> Array:
    h = b.reshape(*b.shape[:-1], b.shape[-1] // 2, 2)
    return jnp.maximum(h[..., 0], h[..., 1])


def block_absmax(x: Float[Array, "rows cols"], block_rows: int) -> Array:
    """Each block's max |x| ([rows / block_rows, cols / 16]); NaN or inf when the block holds
    a NaN or inf (the f32 maximum propagates NaN)."""
    r, c = x.shape
    b = _pairmax(_pairmax(jnp.abs(x)))  # [r, c / 4]
    return jnp.max(b.reshape(r // block_rows, block_rows, c // BLOCK, 4), axis=(1, 3))


def e4m3_round(y: Float[Array, "*s"]) -> Float[Array, "*s"]:
    """Round non-negative f32 (at most 448, or NaN) to the nearest-even FP8 E4M3 value, in f32.

    Normal range (>= 2^-6): keep 3 mantissa bits, round half to even on the bit pattern.
    Subnormal range: multiples of 2^-9. Equals `y.astype(float8_e4m3fn).astype(float32)`.
    """
    bits = jax.lax.bitcast_convert_type(y, jnp.int32)
    bits = (bits + 0x7FFFF + ((bits >> 20) & 1)) & ~0xFFFFF
    normal = jax.lax.bitcast_convert_type(bits, jnp.float32)
    subnormal = round_half_even(y * 512.0) * (1.0 / 512.0)
    return jnp.where(y < 2.0**-6, subnormal, normal)


def round_half_even(t: Float[Array, "*s"]) -> Float[Array, "*s"]:
    """Round to the nearest integer, ties to even, with floor only (Pallas' Triton lowering
    has no `round`)."""
    f = jnp.floor(t)
    diff = t - f
    odd = f - 2.0 * jnp.floor(f * 0.5)
    return jnp.where((diff > 0.5) | ((diff == 0.5) & (odd == 1.0)), f + 1.0, f)


def nvfp4_scales(x: Float[Array, "rows cols"], block_rows: int):
    """(f32 block scales on the E4M3 grid, NaN for non-finite blocks; f32 tensor scale;
    f32 encode scales 1 / (s_block * s_tensor), 0 where the block is empty or non-finite)."""
    m = block_absmax(x, block_rows)
    bad = ~(m < jnp.inf)
    bamax = jnp.where(bad, 0.0, m)
    amax = jnp.max(bamax)
    ts = jnp.where(amax > 0, amax / (E4M3_MAX * E2M1_MAX), 1.0)
    y = jnp.minimum(bamax / E2M1_MAX / ts, E4M3_MAX)
    s = jnp.where(bad, jnp.nan, e4m3_round(y))
    d = s * ts
    inv = 1.0 / jnp.where(d > 0, jnp.maximum(d, _FLT_MIN), jnp.inf)
    return s, ts, inv


def e2m1_index(a: Float[Array, "*s"]) -> Array:
    """E2M1 magnitude index (uint8 in [0, 8)) of |v| = `a`: nearest-even, saturating, NaN -> 0."""
    idx = jnp.zeros(a.shape, jnp.uint8)
    for t, inclusive in _MIDPOINTS:
        idx = idx + (a >= t if inclusive else a > t).astype(jnp.uint8)
    return idx


def e2m1_magnitude(idx: Array) -> Float[Array, "*s"]:
    """Magnitude of an E2M1 index: 0, .5, 1, 1.5 (idx / 2), 2, 3, 4 (idx - 2), 6."""
    f = idx.astype(jnp.float32)
    return jnp.where(idx < 4, f * 0.5, jnp.where(idx < 7, f - 2.0, E2M1_MAX))


def spread(s: Array, block_rows: int, shape: tuple[int, int], per_block: int) -> Array:
    """Block array [R/br, C/16] -> per-element [R, C'] with `per_block` entries per block row."""
    r, c = shape
    s = jnp.broadcast_to(s[:, None, :, None], (r // block_rows, block_rows, s.shape[1], per_block))
    return s.reshape(r, c)


def _codes(v: Array) -> UInt8[Array, "*s"]:
    """4-bit codes of already-scaled values; the sign bit is set where v < 0 (as the reference,
    comparisons rather than the f32 sign bit: XLA:CPU constant-folds `signbit` of a transposed
    constant wrongly inside nested jits, found by the tests)."""
    return e2m1_index(jnp.abs(v)) | jnp.where(v < 0, jnp.uint8(8), jnp.uint8(0))


def quantize_fast(x: Float[Array, "rows cols"], block_rows: int):
    """(packed codes uint8 [R, C/2], E4M3 block scales, f32 tensor scale), nearest-even."""
    x = x.astype(jnp.float32)
    r, c = x.shape
    s, ts, inv = nvfp4_scales(x, block_rows)
    pair = x.reshape(r, c // 2, 2)
    inv_e = spread(inv, block_rows, (r, c // 2), BLOCK // 2)
    packed = _codes(pair[..., 0] * inv_e) | (_codes(pair[..., 1] * inv_e) << 4)
    return packed, s.astype(jnp.float8_e4m3fn), ts


def fake_quantize_fast(x: Float[Array, "rows cols"], block_rows: int) -> Float[Array, "rows cols"]:
    """Quantize-dequantize (nearest-even) in one pass after the scales; dtype of `x` kept."""
    xf = x.astype(jnp.float32)
    s, ts, inv = nvfp4_scales(xf, block_rows)
    inv_e = spread(inv, block_rows, xf.shape, BLOCK)
    d_e = spread(s, block_rows, xf.shape, BLOCK) * ts
    v = xf * inv_e  # inv_e = 0 (and v = 0 or NaN) in empty and non-finite blocks
    mag = e2m1_magnitude(e2m1_index(jnp.abs(v)))
    q = jnp.where(v < 0, -mag, mag)
    return (q * d_e).astype(x.dtype)
