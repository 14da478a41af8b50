"""Pallas kernels: (1) fused NVFP4 quantize (block scales + E2M1 cast + 2-per-byte pack) and
(2) the HCP-patched NVFP4 matmul (dequantize packed tiles + GEMM + residual-column patch).

Each has a pure-jnp `*_reference`, static tile sizes and an `interpret` flag; the tests run
them with `interpret=True` on CPU. On a GPU, `interpret=False` lowers through Pallas (Triton);
that path is not exercised on this CPU-only machine.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from . import _checks
from ._e2m1 import e2m1_decode, e2m1_encode, pack_e2m1, unpack_e2m1
from ._nvfp4 import BLOCK, NVFP4Tensor, nvfp4_parts, tensor_scale_of
from ._types import Array, Float


def nvfp4_quantize_reference(x: Float[Array, "rows cols"], *, block_rows: int = 1) -> NVFP4Tensor:
    """Pure-jnp twin of the quantize kernel (round-to-nearest-even)."""
    q, bs, ts = nvfp4_parts(x, block_rows, "nearest", None)
    return NVFP4Tensor(pack_e2m1(e2m1_encode(q)), bs, ts)


def _quantize_kernel(x_ref, ts_ref, codes_ref, scale_ref, *, block_rows):
    q, bs, _ = nvfp4_parts(x_ref[...], block_rows, "nearest", None, tensor_scale=ts_ref[0, 0])
    codes_ref[...] = pack_e2m1(e2m1_encode(q))
    scale_ref[...] = bs


@partial(jax.jit, static_argnames=("block_rows", "tile_rows", "tile_cols", "interpret"))
def _quantize_call(x, *, block_rows, tile_rows, tile_cols, interpret):
    r, c = x.shape
    ts = tensor_scale_of(x)
    grid = (r // tile_rows, c // tile_cols)
    codes, scales = pl.pallas_call(
        partial(_quantize_kernel, block_rows=block_rows),
        grid=grid,
        in_specs=[
            pl.BlockSpec((tile_rows, tile_cols), lambda i, j: (i, j)),
            pl.BlockSpec((1, 1), lambda i, j: (0, 0)),
        ],
        out_specs=[
            pl.BlockSpec((tile_rows, tile_cols // 2), lambda i, j: (i, j)),
            pl.BlockSpec((tile_rows // block_rows, tile_cols // BLOCK), lambda i, j: (i, j)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((r, c // 2), jnp.uint8),
            jax.ShapeDtypeStruct((r // block_rows, c // BLOCK), jnp.float8_e4m3fn),
        ],
        interpret=interpret,
    )(x.astype(jnp.float32), ts.reshape(1, 1))
    return NVFP4Tensor(codes, scales, ts)


def nvfp4_quantize_pallas(
    x: Float[Array, "rows cols"],
    *,
    block_rows: int = 1,
    tile_rows: int = 16,
    tile_cols: int = 128,
    interpret: bool = False,
) -> NVFP4Tensor:
    """Fused NVFP4 quantize: a jnp amax pass for the tensor scale, then one kernel per tile."""
    _checks.check_float_array(x, "x", ndim=2)
    _checks.check_choice(block_rows, (1, 16), "block_rows")
    tile_cols = min(tile_cols, x.shape[1])
    tile_rows = min(tile_rows, x.shape[0])
    _checks.check_multiple(tile_cols, BLOCK, "tile_cols", "the tile width")
    _checks.check_multiple(tile_rows, block_rows, "tile_rows", "the tile height")
    _checks.check_multiple(x.shape[0], tile_rows, "x", "rows (tile_rows)")
    _checks.check_multiple(x.shape[1], tile_cols, "x", "cols (tile_cols)")
    return _quantize_call(
        x, block_rows=block_rows, tile_rows=tile_rows, tile_cols=tile_cols, interpret=interpret
    )


def _dequant_rows(codes, scale):
    """Packed codes [r, c/2] and f32 per-16 scales [r, c/16] -> values [r, c]."""
    q = e2m1_decode(unpack_e2m1(codes))
    r, c = q.shape
    return (q.reshape(r, c // BLOCK, BLOCK) * scale[:, :, None]).reshape(r, c)


def _row_scales(t: NVFP4Tensor) -> Array:
    """Per-row f32 decode scales s_block * s_tensor, [rows, cols / 16] (16x16 expanded)."""
    s = t.block_scale.astype(jnp.float32) * t.tensor_scale
    return jnp.repeat(s, t.block_rows, axis=0)


def hcp_matmul_reference(
    x: NVFP4Tensor, w_t: NVFP4Tensor, x_patch: Float[Array, "m p"], w_patch: Float[Array, "n p"]
) -> Float[Array, "m n"]:
    """[deq(x) | x_patch] @ [deq(w_t) | w_patch]^T: the HCP GEMM with 2k appended columns.
    `w_t` holds the weight transposed ([n, k], contraction last)."""
    xd = _dequant_rows(x.codes, _row_scales(x))
    wd = _dequant_rows(w_t.codes, _row_scales(w_t))
    return jnp.concatenate([xd, x_patch], 1) @ jnp.concatenate([wd, w_patch], 1).T


def _hcp_kernel(xc_ref, xs_ref, wc_ref, ws_ref, xp_ref, wp_ref, o_ref):
    xd = _dequant_rows(xc_ref[...], xs_ref[...])
    wd = _dequant_rows(wc_ref[...], ws_ref[...])
    dims = (((1,), (1,)), ((), ()))
    acc = jax.lax.dot_general(xd, wd, dims, preferred_element_type=jnp.float32)
    acc += jax.lax.dot_general(xp_ref[...], wp_ref[...], dims, preferred_element_type=jnp.float32)
    o_ref[...] = acc


@partial(jax.jit, static_argnames=("tile_m", "tile_n", "interpret"))
def _hcp_call(xc, xs, wc, ws, xp, wp, *, tile_m, tile_n, interpret):
    m, n, kh, ks, p = xc.shape[0], wc.shape[0], xc.shape[1], xs.shape[1], xp.shape[1]
    return pl.pallas_call(
        _hcp_kernel,
        grid=(m // tile_m, n // tile_n),
        in_specs=[
            pl.BlockSpec((tile_m, kh), lambda i, j: (i, 0)),
            pl.BlockSpec((tile_m, ks), lambda i, j: (i, 0)),
            pl.BlockSpec((tile_n, kh), lambda i, j: (j, 0)),
            pl.BlockSpec((tile_n, ks), lambda i, j: (j, 0)),
            pl.BlockSpec((tile_m, p), lambda i, j: (i, 0)),
            pl.BlockSpec((tile_n, p), lambda i, j: (j, 0)),
        ],
        out_specs=pl.BlockSpec((tile_m, tile_n), lambda i, j: (i, j)),
        out_shape=jax.ShapeDtypeStruct((m, n), jnp.float32),
        interpret=interpret,
    )(xc, xs, wc, ws, xp, wp)


def hcp_matmul_pallas(
    x: NVFP4Tensor,
    w_t: NVFP4Tensor,
    x_patch: Float[Array, "m p"],
    w_patch: Float[Array, "n p"],
    *,
    tile_m: int = 16,
    tile_n: int = 16,
    interpret: bool = False,
) -> Float[Array, "m n"]:
    """HCP-patched NVFP4 GEMM over packed operands, tiled over (m, n), full contraction."""
    m, n = x.shape[0], w_t.shape[0]
    if x.shape[1] != w_t.shape[1]:
        raise ValueError(f"w_t: expected {x.shape[1]} columns like x, got shape {w_t.shape}")
    if x_patch.shape[0] != m or w_patch.shape[0] != n or x_patch.shape[1] != w_patch.shape[1]:
        raise ValueError(
            f"x_patch/w_patch: expected shapes ({m}, p) and ({n}, p), got "
            f"{tuple(x_patch.shape)} and {tuple(w_patch.shape)}"
        )
    tile_m, tile_n = min(tile_m, m), min(tile_n, n)
    _checks.check_multiple(m, tile_m, "x", "rows (tile_m)")
    _checks.check_multiple(n, tile_n, "w_t", "rows (tile_n)")
    return _hcp_call(
        x.codes,
        _row_scales(x),
        w_t.codes,
        _row_scales(w_t),
        x_patch.astype(jnp.float32),
        w_patch.astype(jnp.float32),
        tile_m=tile_m,
        tile_n=tile_n,
        interpret=interpret,
    )
