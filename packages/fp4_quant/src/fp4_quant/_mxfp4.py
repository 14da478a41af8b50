"""MXFP4 (OCP microscaling), the comparison format: E2M1 elements, one power-of-two E8M0 scale
per block of 32, no tensor scale. scale = 2^(floor(log2(block_amax)) - 2).

NaN / inf: a block holding any non-finite value gets the E8M0 NaN scale, so it dequantizes to
NaN (same policy as NVFP4).
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import _checks
from ._e2m1 import e2m1_decode, e2m1_encode, pack_e2m1, round_to_e2m1, unpack_e2m1
from ._types import Array, Float, PRNGKey, UInt8

MX_BLOCK = 32
_EMAX_E2M1 = 2


class MXFP4Tensor(NamedTuple):
    codes: UInt8[Array, "rows half_cols"]
    block_scale: Array  # float8_e8m0fnu [rows, cols / 32]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.codes.shape[0], self.codes.shape[1] * 2)

    @property
    def nbytes(self) -> int:
        return self.codes.size + self.block_scale.size


def mxfp4_parts(x: Array, rounding: str, key: PRNGKey | None):
    x = x.astype(jnp.float32)
    r, c = x.shape
    xb = x.reshape(r, c // MX_BLOCK, MX_BLOCK)
    finite = jnp.isfinite(xb)
    bamax = jnp.max(jnp.where(finite, jnp.abs(xb), 0.0), axis=-1)
    exp = jnp.floor(jnp.log2(jnp.where(bamax > 0, bamax, 1.0))) - _EMAX_E2M1
    exp = jnp.clip(exp, -127.0, 127.0)
    scale = jnp.exp2(exp).astype(jnp.float8_e8m0fnu)
    bad = ~jnp.all(finite, axis=-1)
    scale = jnp.where(bad, jnp.array(jnp.nan, jnp.float8_e8m0fnu), scale)
    v = jnp.where(finite, xb, 0.0) / jnp.exp2(exp)[..., None]
    q = round_to_e2m1(v, rounding=rounding, key=key)
    return q.reshape(r, c), scale


def _validate(x, rounding, key) -> None:
    _checks.check_float_array(x, "x", ndim=2)
    _checks.check_rounding_key(rounding, key)
    _checks.check_multiple(x.shape[1], MX_BLOCK, "x", "the last (block) axis")


def mxfp4_quantize(
    x: Float[Array, "rows cols"], *, rounding: str = "nearest", key: PRNGKey | None = None
) -> MXFP4Tensor:
    """Quantize a 2-D array to packed MXFP4 (blocks of 32 along the last axis)."""
    _validate(x, rounding, key)
    return _quantize(x, rounding, key)


@partial(jax.jit, static_argnums=1)
def _quantize(x, rounding, key):
    q, scale = mxfp4_parts(x, rounding, key)
    return MXFP4Tensor(pack_e2m1(e2m1_encode(q)), scale)


@partial(jax.jit, static_argnames="dtype")
def mxfp4_dequantize(t: MXFP4Tensor, dtype=jnp.float32) -> Float[Array, "rows cols"]:
    q = e2m1_decode(unpack_e2m1(t.codes))
    r, c = q.shape
    s = t.block_scale.astype(jnp.float32)[..., None]
    return (q.reshape(r, c // MX_BLOCK, MX_BLOCK) * s).reshape(r, c).astype(dtype)


@partial(jax.jit, static_argnums=1)
def fake_quantize_mxfp4(x: Array, rounding: str = "nearest", key: PRNGKey | None = None) -> Array:
    q, scale = mxfp4_parts(x, rounding, key)
    r, c = x.shape
    s = scale.astype(jnp.float32)[..., None]
    return (q.reshape(r, c // MX_BLOCK, MX_BLOCK) * s).reshape(r, c).astype(x.dtype)


def mxfp4_fake_quantize(
    x: Float[Array, "rows cols"], *, rounding: str = "nearest", key: PRNGKey | None = None
) -> Float[Array, "rows cols"]:
    """`mxfp4_dequantize(mxfp4_quantize(x))` without packing."""
    _validate(x, rounding, key)
    return fake_quantize_mxfp4(x, rounding, key)
