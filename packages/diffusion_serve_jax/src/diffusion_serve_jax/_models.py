"""The model zoo: small Flax NNX networks that form diffusion workflows on 8x8 digits.

- `ConditionEncoder`: a label (0-9, or 10 = "no condition" for classifier-free guidance) to a
  condition vector (the text encoder of a text-to-image workflow);
- `DiT`: a diffusion transformer over image patches with adaLN conditioning; its blocks expose
  the attention inputs so that editing can recompute only masked tokens (InstGenIE);
- `EdgeAdapter`: a ControlNet-style adapter turning an edge map into per-token residuals
  (zero-initialised output, so an untrained adapter leaves the base model unchanged);
- `Upscaler`: a 2x super-resolution conv net (nearest upsampling plus a learned residual);
- `DigitClassifier`: an MLP that judges generated digits (conditioning accuracy, Frechet features).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from ._types import BatchScalars, CondVec, Images, Labels, Timesteps, Tokens

NULL_LABEL = 10


class ConditionEncoder(nnx.Module):
    def __init__(self, *, dim: int = 64, num_labels: int = 11, rngs: nnx.Rngs):
        self.embed = nnx.Embed(num_labels, dim, rngs=rngs)
        self.fc1 = nnx.Linear(dim, dim, rngs=rngs)
        self.fc2 = nnx.Linear(dim, dim, rngs=rngs)

    def __call__(self, labels: Labels) -> CondVec:
        h = self.embed(labels)
        return self.fc2(nnx.silu(self.fc1(h))) + h


def timestep_embedding(t: BatchScalars, dim: int) -> Float[Array, "batch dim"]:
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class Block(nnx.Module):
    """A DiT block; `attention_inputs` and `finish` split it around the attention op."""

    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.norm1 = nnx.LayerNorm(width, use_scale=False, use_bias=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(width, use_scale=False, use_bias=False, rngs=rngs)
        self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
        self.proj = nnx.Linear(width, width, rngs=rngs)
        self.mlp1 = nnx.Linear(width, 4 * width, rngs=rngs)
        self.mlp2 = nnx.Linear(4 * width, width, rngs=rngs)
        self.ada = nnx.Linear(
            width, 6 * width, kernel_init=nnx.initializers.zeros_init(), rngs=rngs
        )

    def modulation(self, c: Float[Array, "batch hidden"]) -> tuple[Array, ...]:
        return tuple(m[:, None, :] for m in jnp.split(self.ada(nnx.silu(c)), 6, axis=-1))

    def attention_inputs(self, h: Tokens, mods: tuple[Array, ...]) -> tuple[Array, Array, Array]:
        """Per-token q, k, v of shape (batch, tokens, heads, head_dim)."""
        shift1, scale1 = mods[0], mods[1]
        a = self.norm1(h) * (1 + scale1) + shift1
        b, n, w = a.shape
        q, k, v = jnp.split(self.qkv(a), 3, axis=-1)
        shape = (b, n, self.heads, w // self.heads)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

    def finish(self, h: Tokens, o: Array, mods: tuple[Array, ...]) -> Tokens:
        """Residual updates after attention output `o` (batch, tokens, heads, head_dim)."""
        gate1, shift2, scale2, gate2 = mods[2], mods[3], mods[4], mods[5]
        b, n = o.shape[:2]
        h = h + gate1 * self.proj(o.reshape(b, n, -1))
        m = self.norm2(h) * (1 + scale2) + shift2
        return h + gate2 * self.mlp2(nnx.gelu(self.mlp1(m)))


def attention(q: Array, k: Array, v: Array) -> Array:
    """Softmax attention over (batch, tokens, heads, head_dim) arrays."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)


class DiT(nnx.Module):
    def __init__(
        self,
        *,
        image_size: int = 8,
        patch: int = 2,
        width: int = 64,
        depth: int = 3,
        heads: int = 4,
        cond_dim: int = 64,
        rngs: nnx.Rngs,
    ):
        if image_size % patch:
            raise ValueError(f"patch: must divide image_size={image_size}, got {patch}")
        if width % heads:
            raise ValueError(f"heads: must divide width={width}, got {heads}")
        self.image_size, self.patch, self.width = image_size, patch, width
        self.grid = image_size // patch
        self.num_tokens = self.grid**2
        self.patch_in = nnx.Linear(patch * patch, width, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (self.num_tokens, width)))
        self.t1 = nnx.Linear(width, width, rngs=rngs)
        self.t2 = nnx.Linear(width, width, rngs=rngs)
        self.cproj = nnx.Linear(cond_dim, width, rngs=rngs)
        self.blocks = nnx.List([Block(width, heads, rngs=rngs) for _ in range(depth)])
        self.final_ada = nnx.Linear(
            width, 2 * width, kernel_init=nnx.initializers.zeros_init(), rngs=rngs
        )
        self.final_norm = nnx.LayerNorm(width, use_scale=False, use_bias=False, rngs=rngs)
        self.out = nnx.Linear(
            width, patch * patch, kernel_init=nnx.initializers.zeros_init(), rngs=rngs
        )

    # -- token <-> image ------------------------------------------------------------------
    def patchify(self, x: Images) -> Float[Array | np.ndarray, "batch tokens patch_dim"]:
        b, p, g = x.shape[0], self.patch, self.grid
        return x.reshape(b, g, p, g, p).transpose(0, 1, 3, 2, 4).reshape(b, g * g, p * p)

    def unpatchify(self, t: Float[Array, "batch tokens patch_dim"]) -> Images:
        b, p, g = t.shape[0], self.patch, self.grid
        return t.reshape(b, g, g, p, p).transpose(0, 1, 3, 2, 4).reshape(b, g * p, g * p)

    # -- pieces shared by the full and the masked forward -----------------------------------
    def conditioning(self, t: Timesteps, c: CondVec) -> Float[Array, "batch hidden"]:
        temb = self.t2(nnx.silu(self.t1(timestep_embedding(t, self.width))))
        return temb + self.cproj(c)

    def embed_patches(self, patches: Array | np.ndarray, token_ids: Array) -> Tokens:
        """Embed (batch, m, patch_dim) patches sitting at `token_ids` (batch, m)."""
        return self.patch_in(patches) + self.pos[...][token_ids]

    def head(self, h: Tokens, cvec: Float[Array, "batch hidden"]) -> Array:
        shift, scale = jnp.split(self.final_ada(nnx.silu(cvec)), 2, axis=-1)
        return self.out(self.final_norm(h) * (1 + scale[:, None]) + shift[:, None])

    def __call__(
        self, x: Images, t: Timesteps, c: CondVec, control: Tokens | None = None
    ) -> Images:
        """Predict the noise in `x` at integer timesteps `t` given condition vectors `c`."""
        b = x.shape[0]
        ids = jnp.broadcast_to(jnp.arange(self.num_tokens), (b, self.num_tokens))
        h = self.embed_patches(self.patchify(x), ids)
        if control is not None:
            h = h + control
        cvec = self.conditioning(t, c)
        for block in self.blocks:
            mods = block.modulation(cvec)
            q, k, v = block.attention_inputs(h, mods)
            h = block.finish(h, attention(q, k, v), mods)
        return self.unpatchify(self.head(h, cvec))


class EdgeAdapter(nnx.Module):
    """ControlNet-style: edge map -> per-token residual added to the DiT's patch embedding."""

    def __init__(self, *, image_size: int = 8, patch: int = 2, width: int = 64, rngs: nnx.Rngs):
        self.patch, self.grid = patch, image_size // patch
        self.fc1 = nnx.Linear(patch * patch, width, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (self.grid**2, width)))
        self.fc2 = nnx.Linear(width, width, rngs=rngs)
        self.zero = nnx.Linear(width, width, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, edges: Images) -> Tokens:
        b, p, g = edges.shape[0], self.patch, self.grid
        t = edges.reshape(b, g, p, g, p).transpose(0, 1, 3, 2, 4).reshape(b, g * g, p * p)
        h = nnx.silu(self.fc1(t) + self.pos[...][None])
        return self.zero(nnx.silu(self.fc2(h)))


class Upscaler(nnx.Module):
    """2x super-resolution: nearest upsampling plus a conv-net residual (fully convolutional)."""

    def __init__(self, *, channels: int = 16, rngs: nnx.Rngs):
        self.c1 = nnx.Conv(1, channels, kernel_size=(3, 3), rngs=rngs)
        self.c2 = nnx.Conv(channels, channels, kernel_size=(3, 3), rngs=rngs)
        self.c3 = nnx.Conv(channels, 1, kernel_size=(3, 3), rngs=rngs)

    def __call__(self, x: Images) -> Float[Array, "batch up_height up_width"]:
        up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)[..., None]
        h = nnx.silu(self.c1(up))
        h = nnx.silu(self.c2(h))
        return (up + self.c3(h))[..., 0]


class DigitClassifier(nnx.Module):
    """MLP on flattened 8x8 images; `features` is the penultimate layer (Frechet distance)."""

    def __init__(self, *, hidden: int = 64, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(64, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.fc3 = nnx.Linear(hidden, 10, rngs=rngs)

    def features(self, x: Images) -> Float[Array, "batch hidden"]:
        h = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
        return nnx.relu(self.fc2(h))

    def __call__(self, x: Images) -> Float[Array, "batch 10"]:
        return self.fc3(self.features(x))
