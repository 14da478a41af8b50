"""NVFP4: E2M1 elements, one FP8 E4M3 scale per block of 16, one FP32 scale per tensor.

    x ~= e2m1 * s_block * s_tensor,  s_tensor = amax / (448 * 6),
    s_block = e4m3(block_amax / 6 / s_tensor)

Blocks run along the last (contraction) axis: 1x16 for activations and gradients, 16x16 tiles
for weights (so the row- and column-wise copies are the same numbers).

NaN / inf policy (never hidden): the tensor scale is taken over all-finite blocks only, and a block
holding any NaN or inf gets a NaN block scale (E4M3fn has a NaN), so the whole block dequantizes
to NaN and the NaN propagates into any matmul that reads it. The bare E2M1 cast would have turned
NaN into -0. Use `check_finite` on the host to raise instead, or `nonfinite_blocks` to count.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import _checks
from ._e2m1 import E2M1_MAX, e2m1_decode, e2m1_encode, pack_e2m1, round_to_e2m1, unpack_e2m1
from ._nvfp4_fast import fake_quantize_fast, nvfp4_scales, quantize_fast, spread
from ._types import Array, Float, PRNGKey, UInt8

E4M3_MAX = 448.0
BLOCK = 16


class NVFP4Tensor(NamedTuple):
    """Packed NVFP4 storage of a 2-D tensor: 0.5 byte per element + 1 byte per block + 4 bytes."""

    codes: UInt8[Array, "rows half_cols"]
    block_scale: Array  # float8_e4m3fn [rows / block_rows, cols / 16]
    tensor_scale: Float[Array, ""]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.codes.shape[0], self.codes.shape[1] * 2)

    @property
    def block_rows(self) -> int:
        return self.codes.shape[0] // self.block_scale.shape[0]

    @property
    def nbytes(self) -> int:
        return self.codes.size + self.block_scale.size + 4


def _block_view(x: Array, block_rows: int) -> Array:
    r, c = x.shape
    return x.reshape(r // block_rows, block_rows, c // BLOCK, BLOCK)


def _expand(s: Array, block_rows: int) -> Array:
    """Block-shaped [R/br, C/16] -> broadcastable [R/br, 1, C/16, 1]."""
    del block_rows
    return s[:, None, :, None]


def tensor_scale_of(x: Array, block_rows: int = 1) -> Float[Array, ""]:
    """FP32 tensor scale amax / (448 * 6), amax over the blocks that hold only finite values
    (1 for an all-zero tensor)."""
    xb = _block_view(jnp.abs(x.astype(jnp.float32)), block_rows)
    good = jnp.all(jnp.isfinite(xb), axis=(1, 3), keepdims=True)
    amax = jnp.max(jnp.where(good, xb, 0.0))
    return jnp.where(amax > 0, amax / (E4M3_MAX * E2M1_MAX), 1.0)


def encode_scale(d: Array) -> Array:
    """1 / d for decode scales d > 0 (d floored at the smallest normal f32 so the result stays
    finite); 0 where d is 0 or NaN, so such blocks encode to code 0."""
    return 1.0 / jnp.where(d > 0, jnp.maximum(d, 2.0**-126), jnp.inf)


def nvfp4_parts(
    x: Float[Array, "rows cols"],
    block_rows: int,
    rounding: str,
    key: PRNGKey | None,
    tensor_scale: Array | None = None,
):
    """The reference: (E2M1 values in f32 [R, C], E4M3 block scales, f32 tensor scale).

    s_block = e4m3(block_amax / 6 / s_tensor) (NaN for a block with NaN/inf); elements are
    x * 1 / (s_block * s_tensor) rounded to E2M1. The fast path in `_nvfp4_fast.py` must give
    the same numbers.
    """
    x = x.astype(jnp.float32)
    xb = _block_view(x, block_rows)
    finite = jnp.isfinite(xb)
    bad = ~jnp.all(finite, axis=(1, 3))
    bamax = jnp.max(jnp.where(finite, jnp.abs(xb), 0.0), axis=(1, 3))
    ts = tensor_scale_of(x, block_rows) if tensor_scale is None else tensor_scale
    bs = jnp.clip(bamax / E2M1_MAX / ts, 0.0, E4M3_MAX).astype(jnp.float8_e4m3fn)
    bs = jnp.where(bad, jnp.array(jnp.nan, jnp.float8_e4m3fn), bs)
    inv = encode_scale(_expand(bs.astype(jnp.float32), block_rows) * ts)
    v = jnp.where(inv > 0, jnp.where(finite, xb, 0.0) * inv, 0.0)
    q = round_to_e2m1(v.reshape(x.shape), rounding=rounding, key=key)
    return q, bs, ts


def _validate(x, block: str, rounding: str, key) -> int:
    _checks.check_float_array(x, "x", ndim=2)
    _checks.check_choice(block, _checks.BLOCKS, "block")
    _checks.check_rounding_key(rounding, key)
    _checks.check_multiple(x.shape[1], BLOCK, "x", "the last (block) axis")
    block_rows = 16 if block == "16x16" else 1
    _checks.check_multiple(x.shape[0], block_rows, "x", f"rows for {block} blocks")
    return block_rows


def nvfp4_quantize(
    x: Float[Array, "rows cols"],
    *,
    block: str = "1x16",
    rounding: str = "nearest",
    key: PRNGKey | None = None,
) -> NVFP4Tensor:
    """Quantize a 2-D array to packed NVFP4 (blocks along the last axis)."""
    block_rows = _validate(x, block, rounding, key)
    return _quantize(x, block_rows, rounding, key)


@partial(jax.jit, static_argnums=(1, 2))
def _quantize(x, block_rows, rounding, key):
    if rounding == "nearest":
        return NVFP4Tensor(*quantize_fast(x, block_rows))
    q, bs, ts = nvfp4_parts(x, block_rows, rounding, key)
    return NVFP4Tensor(pack_e2m1(e2m1_encode(q)), bs, ts)


@partial(jax.jit, static_argnames="dtype")
def nvfp4_dequantize(t: NVFP4Tensor, dtype=jnp.float32) -> Float[Array, "rows cols"]:
    """Exact inverse of the packing: e2m1 * s_block * s_tensor (NaN where a block was NaN)."""
    q = e2m1_decode(unpack_e2m1(t.codes))
    br = t.block_rows
    d = _expand(t.block_scale.astype(jnp.float32), br) * t.tensor_scale
    return (_block_view(q, br) * d).reshape(q.shape).astype(dtype)


@partial(jax.jit, static_argnums=(1, 2))
def fake_quantize_nvfp4(
    x: Float[Array, "rows cols"],
    block_rows: int = 1,
    rounding: str = "nearest",
    key: PRNGKey | None = None,
) -> Float[Array, "rows cols"]:
    """Quantize-dequantize without packing (the training path; traced, no validation)."""
    if rounding == "nearest":
        return fake_quantize_fast(x, block_rows)
    xf = x.astype(jnp.float32)
    s, ts, inv = nvfp4_scales(xf, block_rows)
    inv_e = spread(inv, block_rows, xf.shape, BLOCK)
    q = round_to_e2m1(jnp.where(inv_e > 0, xf * inv_e, 0.0), rounding=rounding, key=key)
    return (q * (spread(s, block_rows, xf.shape, BLOCK) * ts)).astype(x.dtype)


def fake_quantize_reference(
    x: Float[Array, "rows cols"],
    block_rows: int = 1,
    rounding: str = "nearest",
    key: PRNGKey | None = None,
) -> Float[Array, "rows cols"]:
    """The obviously-right twin of `fake_quantize_nvfp4` (block reshapes, f8 casts)."""
    q, bs, ts = nvfp4_parts(x, block_rows, rounding, key)
    d = _expand(bs.astype(jnp.float32), block_rows) * ts
    return (_block_view(q, block_rows) * d).reshape(x.shape).astype(x.dtype)


def nvfp4_fake_quantize(
    x: Float[Array, "rows cols"],
    *,
    block: str = "1x16",
    rounding: str = "nearest",
    key: PRNGKey | None = None,
) -> Float[Array, "rows cols"]:
    """`nvfp4_dequantize(nvfp4_quantize(x))` without the packing round trip (same numbers)."""
    block_rows = _validate(x, block, rounding, key)
    return fake_quantize_nvfp4(x, block_rows, rounding, key)


def nonfinite_blocks(t: NVFP4Tensor) -> Array:
    """Number of blocks whose scale is NaN (they held NaN or inf before quantization)."""
    return jnp.sum(jnp.isnan(t.block_scale.astype(jnp.float32)))
