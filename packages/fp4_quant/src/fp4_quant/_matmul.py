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
    xq_s = jnp.take(xq, channels, axis=1)
    wq_s = jnp.take(wq, channels, axis=0)
    dx_s = jnp.take(x, channels, axis=1) - xq_s
    dw_s = jnp.take(w, channels, axis=0) - wq_s
    if patch_gate is not None:
        dx_s, dw_s = dx_s * patch_gate, dw_s * patch_gate
    # [xq | dx_S | xq_S] @ [wq ; wq_S ; dw_S], written as the sum of its two contraction
    # ranges so the full operands are not copied into concatenated buffers (on a GPU the
    # Pallas kernel `hcp_matmul_pallas` accumulates both ranges in one kernel).
    x_patch = jnp.concatenate([dx_s, xq_s], axis=1)
    w_patch = jnp.concatenate([wq_s, dw_s], axis=0)
    return xq @ wq + x_patch @ w_patch


def _gated(gates):
    """`sel(quantized, exact)`: the quantized operand, or the exact one where gates[0] == 0."""
    if gates is None:
        return lambda q, a: q
    return lambda q, a: jnp.where(gates[0] > 0, q, a)


# gates[2:5] switch recipe features off at runtime: SR on gradients, RHT on wgrad, 2-D weights.
_SR, _RHT, _W2D = 2, 3, 4


def _flag(gates, i: int, compiled: bool):
    """Runtime switch `i` (None when the static recipe alone decides)."""
    if not compiled or gates is None or gates.shape[0] <= i:
        return None
    return gates[i] > 0


def _pick(flag, on, off):
    """on() if the feature is on; both branches are computed when the flag is a runtime value."""
    return on() if flag is None else jnp.where(flag, on(), off())


def _uses_2d(recipe: MatmulRecipe) -> bool:
    return recipe.fmt == "nvfp4" and recipe.weight_2d


def _forward(x2, w, channels, gates, recipe):
    sel = _gated(gates)
    xq = sel(fake_quantize(x2, recipe), x2)
    wq_t = _pick(
        _flag(gates, _W2D, _uses_2d(recipe)),
        lambda: fake_quantize(w.T, recipe, weight=True),
        lambda: fake_quantize(w.T, recipe._replace(weight_2d=False), weight=True),
    )
    wq = sel(wq_t.T, w)
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
    sr_on = _flag(gates, _SR, sr)

    def quantize_grad(a, key):
        return _pick(
            sr_on,
            lambda: fake_quantize(a, recipe, stochastic=sr, key=key),
            lambda: fake_quantize(a, recipe),
        )

    # dgrad: contraction over N.
    dyq = sel(quantize_grad(dy, k_sr1), dy)
    if _uses_2d(recipe):
        w_n = _pick(
            _flag(gates, _W2D, True),
            lambda: wq,  # 16x16 tiles: the column-wise copy is the same numbers.
            lambda: sel(fake_quantize(w, recipe._replace(weight_2d=False), weight=True), w),
        )
    else:
        w_n = sel(fake_quantize(w, recipe, weight=True), w)
    dx = (dyq @ w_n.T).astype(x2.dtype)
    # wgrad: contraction over M (tokens), padded to whole 16-blocks with zeros.
    xt = _pad_to(x2.T, 1, BLOCK)
    dyt = _pad_to(dy.T, 1, BLOCK)
    if recipe.rht_wgrad and recipe.fmt != "none":
        eye = jnp.eye(BLOCK, dtype=jnp.float32)
        h = sel(random_hadamard_matrix(key=k_rht), eye)
        h = _pick(_flag(gates, _RHT, True), lambda: h, lambda: eye)
        xt, dyt = apply_rht(xt, h), apply_rht(dyt, h)
    xtq = sel(fake_quantize(xt, recipe), xt)
    dytq = sel(quantize_grad(dyt, k_sr2), dyt)
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
    gates: Float[Array, " gates"] | None = None,
) -> Float[Array, "*batch n"]:
    """`x @ w` with NVFP4/MXFP4 forward, dgrad and wgrad GEMMs per `recipe`.

    `key` drives stochastic rounding and the RHT signs (required when the recipe uses them);
    `hot_channels` (int indices into k) turns on the Hot-Channel Patch in the forward GEMM.
    `gates` (optional f32 [2] or [5], may be traced): gates[0] == 0 switches quantization off
    (all three GEMMs exact), gates[1] scales the patch (0 = off), and gates[2], gates[3],
    gates[4] == 0 switch the recipe's stochastic rounding, RHT and 2-D weight blocks off (a
    plain NVFP4 GEMM inside an NVIDIA-recipe graph), so one compiled training step can serve
    several precision variants (e.g. under `vmap`). A switch can only turn off a feature the
    static `recipe` has; where it does, both branches are computed.
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
    if gates is not None and (
        gates.shape not in ((2,), (5,)) or not jnp.issubdtype(gates.dtype, jnp.floating)
    ):
        raise ValueError(
            f"gates: expected a float array of shape (2,) or (5,), got {gates.dtype}{gates.shape}"
        )
    y = _qmm_jit(x2, w, hot_channels, key, gates, recipe)
    return y.reshape(*x.shape[:-1], w.shape[1])
