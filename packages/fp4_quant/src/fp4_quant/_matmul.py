"""The quantized matmul y = x @ w with its own VJP: each of the three GEMMs quantizes its
operands along its own contraction axis, from the high-precision tensors, as the recipe says.

    forward  y  = Q(x | K, 1x16) @ Q(w | K, 16x16 or 1x16)            (+ optional HCP patch)
    dgrad    dx = Q(dy | N, 1x16, SR) @ Q(w | N)^T
    wgrad    dw = Q(RHT x^T | M, 1x16)^T @ Q(RHT dy^T | M, 1x16, SR)

Hot-Channel Patch (forward only): for the selected input channels S the first-order residual
terms dX_S Wq_S + Xq_S dW_S are re-injected by appending 2k columns to the contraction axis of
the same GEMM, [Xq | dX_S | Xq_S] @ [Wq ; Wq_S ; dW_S], leaving only dX_S dW_S.
"""

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from ._e2m1 import key_seed
from ._hadamard import apply_rht, random_hadamard_matrix
from ._mxfp4 import MX_BLOCK, fake_quantize_mxfp4
from ._nvfp4 import BLOCK, fake_quantize_nvfp4
from ._types import Array, Channels, Float, PRNGKey

FORMATS = ("nvfp4", "mxfp4", "none")


class MatmulRecipe(NamedTuple):
    """Per-matmul switches (hashable, static under jit).

    fmt: "nvfp4", "mxfp4" or "none" (high precision, the compute dtype).
    weight_2d: 16x16 weight blocks (NVFP4 only) instead of 1x16.
    sr_grad: stochastic rounding of the output gradient in dgrad and wgrad.
    rht_wgrad: 16x16 random Hadamard transform on both wgrad operands.
    """

    fmt: str = "nvfp4"
    weight_2d: bool = True
    sr_grad: bool = True
    rht_wgrad: bool = True

    @property
    def needs_key(self) -> bool:
        return self.fmt != "none" and (self.sr_grad or self.rht_wgrad)


HIGH_PRECISION = MatmulRecipe(fmt="none", weight_2d=False, sr_grad=False, rht_wgrad=False)
PLAIN_NVFP4 = MatmulRecipe(fmt="nvfp4", weight_2d=False, sr_grad=False, rht_wgrad=False)
NVIDIA_NVFP4 = MatmulRecipe(fmt="nvfp4", weight_2d=True, sr_grad=True, rht_wgrad=True)
PLAIN_MXFP4 = MatmulRecipe(fmt="mxfp4", weight_2d=False, sr_grad=False, rht_wgrad=False)


def _pad_to(a: Array, axis: int, multiple: int) -> Array:
    extra = (-a.shape[axis]) % multiple
    if not extra:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, extra)
    return jnp.pad(a, widths)


@partial(jax.jit, static_argnames=("recipe", "weight", "stochastic"))
def fake_quantize(
    a: Float[Array, "rows cols"],
    recipe: MatmulRecipe,
    *,
    weight: bool = False,
    stochastic: bool = False,
    key: PRNGKey | None = None,
) -> Float[Array, "rows cols"]:
    """Quantize-dequantize a 2-D operand along its last axis per `recipe` (pads, then crops)."""
    if recipe.fmt == "none":
        return a
    rounding = "stochastic" if stochastic else "nearest"
    r, c = a.shape
    if recipe.fmt == "mxfp4":
        out = fake_quantize_mxfp4(_pad_to(a, 1, MX_BLOCK), rounding, key)
        return out[:, :c]
    block_rows = 16 if (weight and recipe.weight_2d) else 1
    padded = _pad_to(_pad_to(a, 1, BLOCK), 0, block_rows)
    return fake_quantize_nvfp4(padded, block_rows, rounding, key)[:r, :c]


def _keys(key: PRNGKey | None):
    """Independent seeds for dgrad SR, wgrad SR and the RHT signs."""
    if key is None:
        return None, None, None
    return key_seed(key, 1), key_seed(key, 2), key_seed(key, 3)


def _patch(xq, x, wq, w, channels, patch_gate=None):
    """Append the hot channels' residual columns to the contraction axis (see module doc)."""
    if channels.shape[0] == 0:
        return xq @ wq
    dx_s = jnp.take(x - xq, channels, axis=1)
    dw_s = jnp.take(w - wq, channels, axis=0)
    if patch_gate is not None:
        dx_s, dw_s = dx_s * patch_gate, dw_s * patch_gate
    xq_s = jnp.take(xq, channels, axis=1)
    wq_s = jnp.take(wq, channels, axis=0)
    x_ext = jnp.concatenate([xq, dx_s, xq_s], axis=1)
    w_ext = jnp.concatenate([wq, wq_s, dw_s], axis=0)
    return x_ext @ w_ext


def _gated(gates):
    """`sel(quantized, exact)`: the quantized operand, or the exact one where gates[0] == 0."""
    if gates is None:
        return lambda q, a: q
    return lambda q, a: jnp.where(gates[0] > 0, q, a)


def _forward(x2, w, channels, gates, recipe):
    sel = _gated(gates)
    xq = sel(fake_quantize(x2, recipe), x2)
    wq = sel(fake_quantize(w.T, recipe, weight=True).T, w)
    y = _patch(xq, x2, wq, w, channels, None if gates is None else gates[1])
    return y, wq


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _qmm(x2, w, channels, key, gates, recipe):
    return _forward(x2, w, channels, gates, recipe)[0]


def _qmm_fwd(x2, w, channels, key, gates, recipe):
    y, wq = _forward(x2, w, channels, gates, recipe)
    return y, (x2, w, wq, channels, key, gates)


def _zero_ct(a):
    if a is None:
        return None
    if jnp.issubdtype(a.dtype, jnp.floating):
        return jnp.zeros_like(a)
    return np.zeros(a.shape, dtype=jax.dtypes.float0)


def _qmm_bwd(recipe, res, dy):
    x2, w, wq, channels, key, gates = res
    sel = _gated(gates)
    k_sr1, k_sr2, k_rht = _keys(key)
    sr = recipe.sr_grad and recipe.fmt != "none"
    # dgrad: contraction over N.
    dyq = sel(fake_quantize(dy, recipe, stochastic=sr, key=k_sr1), dy)
    if recipe.fmt == "nvfp4" and recipe.weight_2d:
        w_n = wq  # 16x16 tiles: the column-wise copy is the same numbers.
    else:
        w_n = sel(fake_quantize(w, recipe, weight=True), w)
    dx = (dyq @ w_n.T).astype(x2.dtype)
    # wgrad: contraction over M (tokens), padded to whole 16-blocks with zeros.
    xt = _pad_to(x2.T, 1, BLOCK)
    dyt = _pad_to(dy.T, 1, BLOCK)
    if recipe.rht_wgrad and recipe.fmt != "none":
        h = sel(random_hadamard_matrix(key=k_rht), jnp.eye(BLOCK, dtype=jnp.float32))
        xt, dyt = apply_rht(xt, h), apply_rht(dyt, h)
    xtq = sel(fake_quantize(xt, recipe), xt)
    dytq = sel(fake_quantize(dyt, recipe, stochastic=sr, key=k_sr2), dyt)
    dw = (xtq @ dytq.T).astype(w.dtype)
    return dx, dw, _zero_ct(channels), _zero_ct(key), _zero_ct(gates)


_qmm.defvjp(_qmm_fwd, _qmm_bwd)
_qmm_jit = jax.jit(_qmm, static_argnums=5)


def quantized_matmul(
    x: Float[Array, "*batch k"],
    w: Float[Array, "k n"],
    *,
    recipe: MatmulRecipe = NVIDIA_NVFP4,
    key: PRNGKey | None = None,
    hot_channels: Channels | None = None,
    gates: Float[Array, "2"] | None = None,
) -> Float[Array, "*batch n"]:
    """`x @ w` with NVFP4/MXFP4 forward, dgrad and wgrad GEMMs per `recipe`.

    `key` drives stochastic rounding and the RHT signs (required when the recipe uses them);
    `hot_channels` (int indices into k) turns on the Hot-Channel Patch in the forward GEMM.
    `gates` (optional f32 [2], may be traced): gates[0] == 0 switches quantization off (all
    three GEMMs exact) and gates[1] scales the patch (0 = off), so one compiled training step
    can serve several precision variants (e.g. under `vmap`).
    """
    _checks.check_float_array(x, "x", min_ndim=1)
    _checks.check_float_array(w, "w", ndim=2)
    if not isinstance(recipe, MatmulRecipe):
        raise TypeError(f"recipe: expected a MatmulRecipe, got {type(recipe).__name__}")
    _checks.check_choice(recipe.fmt, FORMATS, "recipe.fmt")
    if x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"w: expected {x.shape[-1]} rows to match x's last axis, got shape {tuple(w.shape)}"
        )
    if recipe.needs_key and key is None:
        raise ValueError("key: this recipe uses stochastic rounding or RHT; pass key=...")
    if hot_channels is None:
        hot_channels = jnp.zeros((0,), jnp.int32)
    elif not jnp.issubdtype(hot_channels.dtype, jnp.integer) or hot_channels.ndim != 1:
        raise TypeError(
            f"hot_channels: expected a 1-D integer array, got {hot_channels.dtype}"
            f"{tuple(hot_channels.shape)}"
        )
    if not recipe.needs_key:
        key = None
    x2 = x.reshape(-1, x.shape[-1])
    if gates is not None and (gates.shape != (2,) or not jnp.issubdtype(gates.dtype, jnp.floating)):
        raise ValueError(
            f"gates: expected a float array of shape (2,), got {gates.dtype}{gates.shape}"
        )
    y = _qmm_jit(x2, w, hot_channels, key, gates, recipe)
    return y.reshape(*x.shape[:-1], w.shape[1])
