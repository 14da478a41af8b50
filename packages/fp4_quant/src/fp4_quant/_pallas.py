"""Pallas kernels: (1) fused NVFP4 quantize (block scales + E2M1 cast + 2-per-byte pack) and
(2) the HCP-patched NVFP4 matmul (dequantize packed tiles + GEMM + residual-column patch).

Each has a pure-jnp `*_reference`, static tile sizes and an `interpret` flag; the tests run
them with `interpret=True` on CPU against the references. On a GPU, `interpret=False` lowers
through Pallas' Triton backend (the default for `pallas_call` on GPU; not Mosaic GPU). The
kernel bodies keep to what that lowering accepts (jax 0.10 `pallas/triton/lowering.py`), and
`check_triton_shapes` rejects shapes it would not compile:

- every block (and every array inside the kernel) has a power-of-two number of elements;
- `dot` operands have both dimensions >= 16 (tl.dot), f32 inputs, f32 accumulation;
- no strided slicing, gathers or general concatenates: E2M1 codes are packed by a weighted
  sum over a trailing axis of 2 and unpacked with a 2-way `stack` (tt.join); blocks are
  formed by reshapes without reordering, block maxima by `max` reductions;
- no `round` and no float8 cast inside kernels (the E4M3 cast needs sm_89+): E4M3 block scales
  are rounded with integer/floor arithmetic and leave the kernel as f32 values on the E4M3
  grid, cast to `float8_e4m3fn` outside (exact);
- the tensor scale (a global amax) is a separate XLA reduction before the quantize kernel.
`benchmarks/gpu_validate.py` compiles both kernels on a GPU, checks them against the
references and times them.
"""

from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from . import _checks
from ._e2m1 import E2M1_MAX, e2m1_decode, e2m1_encode, pack_e2m1, unpack_e2m1
from ._nvfp4 import BLOCK, E4M3_MAX, NVFP4Tensor, encode_scale, nvfp4_parts, tensor_scale_of
from ._nvfp4_fast import e2m1_index, e4m3_round
from ._types import Array, Float


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def check_triton_shapes(blocks: dict[str, tuple[int, ...]], dots: dict[str, tuple[int, ...]]):
    """Raise ValueError naming the block that Pallas' Triton lowering would reject."""
    for name, shape in blocks.items():
        size = 1
        for d in shape:
            size *= d
        if not _pow2(size):
            raise ValueError(
                f"{name}: on GPU (Triton) every block needs a power-of-two size, got block "
                f"shape {shape}; pass interpret=True or change the shape/tiles"
            )
    for name, dims in dots.items():
        if min(dims) < 16:
            raise ValueError(f"{name}: on GPU (Triton) dot dimensions must be >= 16, got {dims}")


def nvfp4_quantize_reference(x: Float[Array, "rows cols"], *, block_rows: int = 1) -> NVFP4Tensor:
    """Pure-jnp twin of the quantize kernel (round-to-nearest-even)."""
    q, bs, ts = nvfp4_parts(x, block_rows, "nearest", None)
    return NVFP4Tensor(pack_e2m1(e2m1_encode(q)), bs, ts)


def _quantize_tile(x, ts, block_rows: int):
    """(packed codes uint8 [r, c/2], f32 E4M3-grid block scales [r/br, c/16]) of one tile,
    nearest-even; the same numbers as the reference, in Triton-legal ops only."""
    r, c = x.shape
    xb = x.reshape(r // block_rows, block_rows, c // BLOCK, BLOCK)
    a = jnp.abs(xb)
    finite = a < jnp.inf
    bad = jnp.max(
        jnp.max(jnp.where(finite, 0.0, 1.0), axis=3, keepdims=True), axis=1, keepdims=True
    )
    bamax = jnp.max(
        jnp.max(jnp.where(finite, a, 0.0), axis=3, keepdims=True), axis=1, keepdims=True
    )
    y = jnp.minimum(bamax / E2M1_MAX / ts, E4M3_MAX)
    s = jnp.where(bad > 0, jnp.nan, e4m3_round(y))  # [r/br, 1, c/16, 1]
    v = jnp.where(finite, xb, 0.0) * encode_scale(s * ts)
    codes = e2m1_index(jnp.abs(v)).astype(jnp.int32) + jnp.where(v < 0, 8, 0)
    pairs = codes.reshape(r, c // 2, 2)
    nibble = 1 + 15 * jax.lax.broadcasted_iota(jnp.int32, (1, 1, 2), 2)  # [1, 16]
    packed = jnp.sum(pairs * nibble, axis=2).astype(jnp.uint8)
    return packed, s.reshape(r // block_rows, c // BLOCK)


def _quantize_kernel(x_ref, ts_ref, codes_ref, scale_ref, *, block_rows):
    codes_ref[...], scale_ref[...] = _quantize_tile(x_ref[...], ts_ref[0, 0], block_rows)


@partial(jax.jit, static_argnames=("block_rows", "tile_rows", "tile_cols", "interpret"))
def _quantize_call(x, *, block_rows, tile_rows, tile_cols, interpret):
    r, c = x.shape
    ts = tensor_scale_of(x, block_rows)
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
            jax.ShapeDtypeStruct((r // block_rows, c // BLOCK), jnp.float32),
        ],
        interpret=interpret,
    )(x.astype(jnp.float32), ts.reshape(1, 1))
    return NVFP4Tensor(codes, scales.astype(jnp.float8_e4m3fn), ts)


def nvfp4_quantize_pallas(
    x: Float[Array, "rows cols"],
    *,
    block_rows: int = 1,
    tile_rows: int = 16,
    tile_cols: int = 128,
    interpret: bool = False,
) -> NVFP4Tensor:
    """Fused NVFP4 quantize: a jnp amax pass for the tensor scale, then one kernel per tile
    (block scales, E2M1 rounding and packing). Equals `nvfp4_quantize_reference` bit for bit."""
    _checks.check_float_array(x, "x", ndim=2)
    _checks.check_choice(block_rows, (1, 16), "block_rows")
    tile_cols = min(tile_cols, x.shape[1])
    tile_rows = min(tile_rows, x.shape[0])
    _checks.check_multiple(tile_cols, BLOCK, "tile_cols", "the tile width")
    _checks.check_multiple(tile_rows, block_rows, "tile_rows", "the tile height")
    _checks.check_multiple(x.shape[0], tile_rows, "x", "rows (tile_rows)")
    _checks.check_multiple(x.shape[1], tile_cols, "x", "cols (tile_cols)")
    if not interpret:
        check_triton_shapes(
            {
                "x tile (tile_rows, tile_cols)": (tile_rows, tile_cols),
                "scale tile": (tile_rows // block_rows, tile_cols // BLOCK),
            },
            {},
        )
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


def _hcp_kernel(xc_ref, xs_ref, wc_ref, ws_ref, xp_ref, wp_ref, o_ref, *, tile_k):
    # The contraction is walked in tile_k chunks: dequantizing whole rows at once needs
    # tile * k * 4 bytes of shared memory per operand, over the H200's 227 KiB at k = 512.
    dims = (((1,), (1,)), ((), ()))
    acc = jax.lax.dot_general(xp_ref[...], wp_ref[...], dims, preferred_element_type=jnp.float32)

    def step(i, acc):
        c, s = pl.ds(i * (tile_k // 2), tile_k // 2), pl.ds(i * (tile_k // BLOCK), tile_k // BLOCK)
        xd = _dequant_rows(xc_ref[:, c], xs_ref[:, s])
        wd = _dequant_rows(wc_ref[:, c], ws_ref[:, s])
        return acc + jax.lax.dot_general(xd, wd, dims, preferred_element_type=jnp.float32)

    o_ref[...] = jax.lax.fori_loop(0, 2 * xc_ref.shape[1] // tile_k, step, acc)


@partial(jax.jit, static_argnames=("tile_m", "tile_n", "tile_k", "interpret"))
def _hcp_call(xc, xs, wc, ws, xp, wp, *, tile_m, tile_n, tile_k, interpret):
    m, n, kh, ks, p = xc.shape[0], wc.shape[0], xc.shape[1], xs.shape[1], xp.shape[1]
    return pl.pallas_call(
        partial(_hcp_kernel, tile_k=tile_k),
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
    tile_k: int = 64,
    interpret: bool = False,
) -> Float[Array, "m n"]:
    """HCP-patched NVFP4 GEMM over packed operands: a grid over (m, n) tiles, each walking the
    contraction in `tile_k` chunks (dequantize two chunks, one f32 dot, accumulate)."""
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
    tile_k = min(tile_k, x.shape[1])
    _checks.check_multiple(tile_k, BLOCK, "tile_k", "the NVFP4 block (16)")
    _checks.check_multiple(x.shape[1], tile_k, "x", "columns (tile_k)")
    # zero patch columns up to a power of two >= 16 (tl.dot needs K >= 16; exact: adds zeros)
    p = x_patch.shape[1]
    p_pad = max(16, 1 << max(p - 1, 0).bit_length())
    x_patch = jnp.pad(x_patch.astype(jnp.float32), ((0, 0), (0, p_pad - p)))
    w_patch = jnp.pad(w_patch.astype(jnp.float32), ((0, 0), (0, p_pad - p)))
    if not interpret:
        k = x.shape[1]
        check_triton_shapes(
            {
                "x codes tile (tile_m, k / 2)": (tile_m, k // 2),
                "x scale tile (tile_m, k / 16)": (tile_m, k // BLOCK),
                "w_t codes tile (tile_n, k / 2)": (tile_n, k // 2),
                "patch tile (tile_m, p)": (tile_m, p_pad),
                "x chunk (tile_m, tile_k)": (tile_m, tile_k),
                "scale chunk (tile_m, tile_k / 16)": (tile_m, tile_k // BLOCK),
            },
            {"dot (tile_m, tile_n, tile_k)": (tile_m, tile_n, tile_k)},
        )
    return _hcp_call(
        x.codes,
        _row_scales(x),
        w_t.codes,
        _row_scales(w_t),
        x_patch,
        w_patch,
        tile_m=tile_m,
        tile_n=tile_n,
        tile_k=tile_k,
        interpret=interpret,
    )
