"""Hot-Channel Patch: online channel scores from quantization residuals, periodic top-k.

Carried like optimizer state: `hcp = hot_channel_patch(k, period=..., decay=...)`,
`state = hcp.init(num_channels)`, `state = hcp.update(state, x, w)`; `state.channels` feeds
`quantized_matmul(..., hot_channels=state.channels)`. Score of input channel j:

    s_j = mean_rows |dX[:, j]| + mean_cols |dW[j, :]|,   dX = X - Q(X), dW = W - Q(W)

smoothed with an exponential moving average; the top-k set is re-selected every `period` updates.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._matmul import NVIDIA_NVFP4, MatmulRecipe, fake_quantize
from ._types import Array, Channels, Float


class HCPState(NamedTuple):
    score: Float[Array, " k_in"]
    channels: Channels
    count: Array


class HotChannelPatch(NamedTuple):
    init: callable
    update: callable


def hcp_channel_scores(
    x: Float[Array, "*batch k_in"], w: Float[Array, "k_in n"], recipe: MatmulRecipe = NVIDIA_NVFP4
) -> Float[Array, " k_in"]:
    """Per-input-channel residual score s_j = mean|dX_j| + mean|dW_j| (no gradient)."""
    x2 = jax.lax.stop_gradient(x.reshape(-1, x.shape[-1]).astype(jnp.float32))
    w = jax.lax.stop_gradient(w.astype(jnp.float32))
    dx = jnp.abs(x2 - fake_quantize(x2, recipe))
    dw = jnp.abs(w - fake_quantize(w.T, recipe, weight=True).T)
    return jnp.mean(dx, axis=0) + jnp.mean(dw, axis=1)


def hot_channel_patch(
    k: int, *, period: int = 10, decay: float = 0.9, recipe: MatmulRecipe = NVIDIA_NVFP4
) -> HotChannelPatch:
    """HCP as an (init, update) pair; hyperparameters live in the closure, not the state."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    if not isinstance(period, int) or period < 1:
        raise ValueError(f"period: expected a positive int, got {period!r}")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay: expected a value in [0, 1), got {decay!r}")

    def init(num_channels: int) -> HCPState:
        if num_channels < k:
            raise ValueError(f"num_channels: expected >= k={k}, got {num_channels}")
        return HCPState(
            jnp.zeros((num_channels,), jnp.float32),
            jnp.arange(k, dtype=jnp.int32),
            jnp.zeros((), jnp.int32),
        )

    def update(state: HCPState, x: Array, w: Array) -> HCPState:
        s = hcp_channel_scores(x, w, recipe)
        score = jnp.where(state.count == 0, s, decay * state.score + (1.0 - decay) * s)
        reselect = state.count % period == 0
        top = jax.lax.top_k(score, k)[1].astype(jnp.int32)
        channels = jnp.where(reselect, top, state.channels)
        return HCPState(score, channels, state.count + 1)

    return HotChannelPatch(init, update)
