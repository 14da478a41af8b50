"""The guided conditional diffusion UNet (teacher and student) and its cost measurements.

SR3-style: the noisy residual x_t is concatenated with the conditioning (bicubic low-field image
+ guidance maps), every residual block is FiLM-modulated by an embedding of the continuous noise
level gamma = sqrt(alpha_bar), so any discretisation of time can be sampled. `multiscale_cond`
additionally feeds the conditioning, average-pooled, into every encoder level (the small
multi-scale student). `return_features=True` returns the activations named in `feature_names`,
which the distillation matches between teacher and student.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ._types import Array, Channels, CondChannels, NoiseLevel


def gamma_embedding(alpha_bar: NoiseLevel, dim: int) -> Array:
    """Sinusoidal embedding (b, dim) of gamma = sqrt(alpha_bar) scaled to [0, 1000] (SR3)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    arg = 1000.0 * jnp.sqrt(alpha_bar)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


class _Block(nnx.Module):
    """Residual block: conv(silu(FiLM(conv(silu(x)), emb))) + skip (1x1 when widths differ)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, *, rngs: nnx.Rngs):
        self.c1 = nnx.Conv(cin, cout, (3, 3), rngs=rngs)
        self.c2 = nnx.Conv(cout, cout, (3, 3), rngs=rngs)
        self.film = nnx.Linear(emb_dim, 2 * cout, rngs=rngs)
        self.skip = nnx.Conv(cin, cout, (1, 1), rngs=rngs) if cin != cout else None

    def __call__(self, x: Array, emb: Array) -> Array:
        h = self.c1(nnx.silu(x))
        scale, shift = jnp.split(self.film(emb)[:, None, None, :], 2, axis=-1)
        h = self.c2(nnx.silu(h * (1.0 + scale) + shift))
        return h + (x if self.skip is None else self.skip(x))


def _pool(x: Array, factor: int) -> Array:
    if factor == 1:
        return x
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


class GuidedUNet(nnx.Module):
    """Conditional diffusion UNet with continuous noise-level conditioning.

    `widths[i]` channels at resolution 1 / 2^i; called as `net(x_t, cond, alpha_bar)` with
    x_t (b, h, w, 1), cond (b, h, w, cond_channels), alpha_bar (b,); h and w must be divisible
    by 2^(len(widths) - 1).
    """

    def __init__(
        self,
        cond_channels: int,
        widths: tuple[int, ...] = (16, 32, 64),
        emb_dim: int = 32,
        *,
        multiscale_cond: bool = False,
        rngs: nnx.Rngs,
    ):
        if len(widths) < 1 or min(widths) < 1:
            raise ValueError(f"widths: expected positive channel counts, got {widths}")
        self.widths = tuple(widths)
        self.emb_dim = emb_dim
        self.multiscale_cond = multiscale_cond
        self.emb1 = nnx.Linear(emb_dim, emb_dim, rngs=rngs)
        self.emb2 = nnx.Linear(emb_dim, emb_dim, rngs=rngs)
        self.inp = nnx.Conv(1 + cond_channels, widths[0], (3, 3), rngs=rngs)
        self.enc = nnx.List([_Block(w, w, emb_dim, rngs=rngs) for w in widths])
        self.down = nnx.List(
            [
                nnx.Conv(widths[i], widths[i + 1], (3, 3), strides=(2, 2), rngs=rngs)
                for i in range(len(widths) - 1)
            ]
        )
        self.cond_in = nnx.List(
            [nnx.Conv(cond_channels, w, (1, 1), rngs=rngs) for w in widths[1:]]
            if multiscale_cond
            else []
        )
        self.mid = _Block(widths[-1], widths[-1], emb_dim, rngs=rngs)
        self.up = nnx.List(
            [nnx.Conv(widths[i + 1], widths[i], (3, 3), rngs=rngs) for i in range(len(widths) - 1)]
        )
        self.dec = nnx.List(
            [_Block(2 * widths[i], widths[i], emb_dim, rngs=rngs) for i in range(len(widths) - 1)]
        )
        self.out = nnx.Conv(widths[0], 1, (3, 3), rngs=rngs)

    @property
    def feature_names(self) -> tuple[str, ...]:
        n = len(self.widths)
        return (
            tuple(f"enc{i}" for i in range(n))
            + ("mid",)
            + tuple(f"dec{i}" for i in reversed(range(n - 1)))
        )

    def __call__(
        self,
        x_t: Channels,
        cond: CondChannels,
        alpha_bar: NoiseLevel,
        return_features: bool = False,
    ):
        div = 2 ** (len(self.widths) - 1)
        if x_t.ndim != 4 or x_t.shape[1] % div or x_t.shape[2] % div:
            raise ValueError(
                f"x_t: expected (batch, h, w, 1) with h, w divisible by {div}, got {x_t.shape}"
            )
        emb = self.emb2(nnx.silu(self.emb1(gamma_embedding(alpha_bar, self.emb_dim))))
        h = self.inp(jnp.concatenate([x_t, cond], axis=-1))
        feats, skips = {}, []
        for i, block in enumerate(self.enc):
            if i:
                h = self.down[i - 1](nnx.silu(h))
                if self.multiscale_cond:
                    h = h + self.cond_in[i - 1](_pool(cond, 2**i))
            h = block(h, emb)
            feats[f"enc{i}"] = h
            skips.append(h)
        h = self.mid(h, emb)
        feats["mid"] = h
        for i in reversed(range(len(self.widths) - 1)):
            skip = skips[i]
            h = jax.image.resize(h, skip.shape[:3] + h.shape[3:], "nearest")
            h = self.dec[i](jnp.concatenate([self.up[i](h), skip], axis=-1), emb)
            feats[f"dec{i}"] = h
        y = self.out(nnx.silu(h))
        return (y, feats) if return_features else y


class FeatureAdapters(nnx.Module):
    """1x1 convolutions mapping student features to the teacher's widths (FitNets hints).

    Part of the distillation only: the deployed student does not carry them.
    """

    def __init__(self, student: GuidedUNet, teacher: GuidedUNet, layers: tuple[str, ...], *, rngs):
        sw, tw = _layer_widths(student), _layer_widths(teacher)
        for name in layers:
            if name not in sw or name not in tw:
                raise ValueError(
                    f"feature_layers: {name!r} is not a layer of both networks; "
                    f"student has {sorted(sw)}, teacher has {sorted(tw)}"
                )
        self.layers = tuple(layers)
        self.maps = nnx.Dict({n: nnx.Conv(sw[n], tw[n], (1, 1), rngs=rngs) for n in layers})

    def __call__(self, feats: dict[str, Array]) -> dict[str, Array]:
        return {n: self.maps[n](feats[n]) for n in self.layers}


def _layer_widths(net: GuidedUNet) -> dict[str, int]:
    n = len(net.widths)
    out = {f"enc{i}": net.widths[i] for i in range(n)} | {"mid": net.widths[-1]}
    return out | {f"dec{i}": net.widths[i] for i in range(n - 1)}


def forward_cost(graphdef, params, shape: tuple[int, int, int, int], cond_channels: int) -> dict:
    """XLA's cost analysis of one network evaluation on x_t of `shape`: flops, bytes accessed."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    c = jax.ShapeDtypeStruct(shape[:3] + (cond_channels,), jnp.float32)
    ab = jax.ShapeDtypeStruct(shape[:1], jnp.float32)
    fn = jax.jit(lambda p, x, c, ab: nnx.merge(graphdef, p)(x, c, ab))
    lowered = fn.lower(params, x, c, ab)
    cost = lowered.cost_analysis()  # HLO-level, no backend compile; None on GPU backends
    if cost is None:
        cost = lowered.compile().cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    cost = cost or {}
    return {
        "flops": float(cost.get("flops", float("nan"))),
        "bytes": float(cost.get("bytes accessed", float("nan"))),
    }
