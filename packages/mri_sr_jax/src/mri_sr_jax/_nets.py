"""Small Flax NNX networks: noise-level embedding, FiLM residual conv denoiser, EDSR-lite, UNet.

All take NHWC images. Denoisers are called as `net(x_t, cond, alpha_bar)` with `x_t`
(b, h, w, 1), `cond` (b, h, w, c) (the bicubic-upsampled LR image plus any guidance maps) and
`alpha_bar` (b,), and are conditioned on the continuous noise level gamma = sqrt(alpha_bar)
(SR3), so the same network serves any discretisation of time.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ._types import Array, Channels, NoiseLevel


def noise_embedding(alpha_bar: NoiseLevel, dim: int) -> Array:
    """Sinusoidal embedding of gamma = sqrt(alpha_bar) scaled to [0, 1000] (SR3 style)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    arg = 1000.0 * jnp.sqrt(alpha_bar)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


class NoiseMLP(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.dim = dim
        self.l1 = nnx.Linear(dim, dim, rngs=rngs)
        self.l2 = nnx.Linear(dim, dim, rngs=rngs)

    def __call__(self, alpha_bar: NoiseLevel) -> Array:
        return self.l2(nnx.silu(self.l1(noise_embedding(alpha_bar, self.dim))))


class FiLMResBlock(nnx.Module):
    """x + conv(silu(FiLM(conv(silu(x)), emb)))."""

    def __init__(self, width: int, emb_dim: int, *, rngs: nnx.Rngs):
        self.c1 = nnx.Conv(width, width, (3, 3), rngs=rngs)
        self.c2 = nnx.Conv(width, width, (3, 3), rngs=rngs)
        self.film = nnx.Linear(emb_dim, 2 * width, rngs=rngs) if emb_dim else None

    def __call__(self, x: Array, emb: Array | None) -> Array:
        h = self.c1(nnx.silu(x))
        if self.film is not None:
            scale, shift = jnp.split(self.film(emb)[:, None, None, :], 2, axis=-1)
            h = h * (1.0 + scale) + shift
        return x + self.c2(nnx.silu(h))


class ConvDenoiser(nnx.Module):
    """A plain residual CNN denoiser with FiLM noise conditioning (one MoEDiff-SR expert).

    `scale_input=True` feeds sqrt(alpha_bar) * x_t instead of x_t (signal-preserving input
    scaling): the sample's SNR is unchanged, but near t = 1, where x_t carries no information
    about x0, the network no longer sees unit-variance noise, so the first step of a few-step
    sampler is a deterministic regression on the conditioning instead of having to learn to
    ignore the noise. `return_features=True` also returns the activations after every block
    (for distillation).
    """

    def __init__(
        self,
        cond_channels: int,
        width: int = 16,
        depth: int = 3,
        emb_dim: int = 16,
        *,
        scale_input: bool = False,
        rngs: nnx.Rngs,
    ):
        self.scale_input = scale_input
        self.noise = NoiseMLP(emb_dim, rngs=rngs)
        self.inp = nnx.Conv(1 + cond_channels, width, (3, 3), rngs=rngs)
        self.blocks = nnx.List([FiLMResBlock(width, emb_dim, rngs=rngs) for _ in range(depth)])
        self.out = nnx.Conv(width, 1, (3, 3), rngs=rngs)

    def __call__(
        self, x_t: Channels, cond: Channels, alpha_bar: NoiseLevel, return_features: bool = False
    ):
        emb = self.noise(alpha_bar)
        if self.scale_input:
            x_t = x_t * jnp.sqrt(alpha_bar)[:, None, None, None]
        h = self.inp(jnp.concatenate([x_t, cond], axis=-1))
        feats = []
        for block in self.blocks:
            h = block(h, emb)
            feats.append(h)
        y = self.out(nnx.silu(h))
        return (y, feats) if return_features else y


class EDSRLite(nnx.Module):
    """Regression baseline: residual conv blocks mapping the upsampled LR to the HR residual."""

    def __init__(self, cond_channels: int, width: int = 16, depth: int = 3, *, rngs: nnx.Rngs):
        self.inp = nnx.Conv(cond_channels, width, (3, 3), rngs=rngs)
        self.blocks = nnx.List([FiLMResBlock(width, 0, rngs=rngs) for _ in range(depth)])
        self.out = nnx.Conv(width, 1, (3, 3), rngs=rngs)

    def __call__(self, cond: Channels) -> Channels:
        h = self.inp(cond)
        for block in self.blocks:
            h = block(h, None)
        return self.out(nnx.silu(h))


class TinyUNet(nnx.Module):
    """A two-level UNet denoiser (SR3-like, much smaller), FiLM noise conditioning.

    Features returned with `return_features=True`: [encoder level 0, bottleneck, decoder level 0].
    """

    def __init__(self, cond_channels: int, width: int = 16, emb_dim: int = 16, *, rngs: nnx.Rngs):
        self.noise = NoiseMLP(emb_dim, rngs=rngs)
        self.inp = nnx.Conv(1 + cond_channels, width, (3, 3), rngs=rngs)
        self.enc = FiLMResBlock(width, emb_dim, rngs=rngs)
        self.down = nnx.Conv(width, 2 * width, (3, 3), strides=(2, 2), rngs=rngs)
        self.mid = FiLMResBlock(2 * width, emb_dim, rngs=rngs)
        self.up = nnx.Conv(2 * width, width, (3, 3), rngs=rngs)
        self.dec = FiLMResBlock(width, emb_dim, rngs=rngs)
        self.out = nnx.Conv(width, 1, (3, 3), rngs=rngs)

    def __call__(self, x_t, cond, alpha_bar, return_features: bool = False):
        emb = self.noise(alpha_bar)
        h0 = self.enc(self.inp(jnp.concatenate([x_t, cond], axis=-1)), emb)
        m = self.mid(self.down(nnx.silu(h0)), emb)
        b, h, w, c = m.shape
        u = jax.image.resize(m, (b, h0.shape[1], h0.shape[2], c), "nearest")
        d = self.dec(self.up(u) + h0, emb)
        y = self.out(nnx.silu(d))
        return (y, [h0, m, d]) if return_features else y


def conv_denoiser_params(cond_channels: int, width: int, depth: int, emb_dim: int) -> int:
    """Closed-form parameter count of `ConvDenoiser` (to size a model without building it)."""
    e, w = emb_dim, width
    noise = 2 * (e * e + e)
    inp = 9 * (1 + cond_channels) * w + w
    block = 2 * (9 * w * w + w) + (e * 2 * w + 2 * w)
    return noise + inp + depth * block + 9 * w + 1


def conv_denoiser_width(cond_channels: int, depth: int, emb_dim: int, params: int) -> int:
    """The `ConvDenoiser` width (4..128) whose parameter count is closest to `params`: the
    single-expert baseline sized like a mixture."""
    if params < 1:
        raise ValueError(f"params: expected a positive parameter count, got {params}")
    count = lambda w: conv_denoiser_params(cond_channels, w, depth, emb_dim)
    return min(range(4, 129), key=lambda w: abs(count(w) - params))


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars."""
    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def init_fast(constructor: Callable[[], nnx.Module], *, seed: int = 0) -> nnx.Module:
    """Build `constructor()` with numpy-drawn parameters: no per-op XLA dispatch at init.

    Shapes come from `nnx.eval_shape`; kernels get LeCun-normal values (variance 1 / fan-in,
    fan-in = product of all but the last axis, or the first axis for attention q/k/v kernels),
    biases zeros, LayerNorm scales ones — the same distributions as Flax's defaults.
    """
    abstract = nnx.eval_shape(constructor)
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
        shape, dtype = leaf.shape, leaf.dtype
        if names[-1] == "bias" or (names[-1] == "value" and "bias" in names):
            return jnp.zeros(shape, dtype)
        if "scale" in names:
            return jnp.ones(shape, dtype)
        attn_qkv = len(shape) == 3 and any(n in ("query", "key", "value") for n in names)
        fan_in = shape[0] if attn_qkv else int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        return jnp.asarray(rng.standard_normal(shape) / np.sqrt(max(fan_in, 1)), dtype)

    state = jax.tree_util.tree_map_with_path(fill, state)
    return nnx.merge(graphdef, state)
