"""The two "hands of God": small BERT-style encoders over the token vocabulary (Flax NNX).

- `MutationModel`: a masked-language model; given an expression with one gene replaced by the
  mask token it scores every vocabulary entry for that gene. Callers restrict the scores to
  tokens of the masked gene's arity, so its proposals keep the tree valid.
- `CrossoverModel`: given a parent and a donor it scores every position of both; the softmax
  over the parent's (donor's) nodes is the distribution of the crossover (donor) point.

Both are bidirectional pre-LayerNorm transformer encoders with learned position embeddings and
padding masked out of attention.
"""

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from ._primitives import PrimitiveSet
from ._types import HostOrDevice


class _Block(nnx.Module):
    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
        if dim % heads:
            raise ValueError(f"dim: expected a multiple of heads={heads}, got {dim}")
        self.heads = heads
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
        self.out = nnx.Linear(dim, dim, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.fc1 = nnx.Linear(dim, 2 * dim, rngs=rngs)
        self.fc2 = nnx.Linear(2 * dim, dim, rngs=rngs)

    def __call__(self, x: Float[Array, "b l d"], keep: HostOrDevice) -> Float[Array, "b l d"]:
        b, length, d = x.shape
        h = self.heads
        q, k, v = jnp.split(self.qkv(self.ln1(x)), 3, axis=-1)
        q, k, v = (t.reshape(b, length, h, d // h) for t in (q, k, v))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.float32(d // h))
        logits = jnp.where(keep[:, None, None, :], logits, -1e9)
        att = jax.nn.softmax(logits, axis=-1)
        y = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, length, d)
        x = x + self.out(y)
        return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))


class Encoder(nnx.Module):
    """Token + position embeddings and `depth` transformer blocks."""

    def __init__(self, pset: PrimitiveSet, dim: int, depth: int, heads: int, *, rngs: nnx.Rngs):
        self.pad = pset.pad
        self.tok = nnx.Embed(pset.vocab_size + 2, dim, rngs=rngs)
        self.pos = nnx.Embed(pset.max_len, dim, rngs=rngs)
        self.blocks = nnx.List([_Block(dim, heads, rngs=rngs) for _ in range(depth)])
        self.ln = nnx.LayerNorm(dim, rngs=rngs)

    def __call__(self, tokens: Int[HostOrDevice, "b l"]) -> Float[Array, "b l d"]:
        keep = tokens != self.pad
        x = self.tok(tokens) + self.pos(jnp.arange(tokens.shape[-1]))[None]
        for blk in self.blocks:
            x = blk(x, keep)
        return self.ln(x)


class MutationModel(nnx.Module):
    """Masked-gene model: logits over the vocabulary at every position."""

    def __init__(
        self,
        pset: PrimitiveSet,
        *,
        dim: int = 32,
        depth: int = 2,
        heads: int = 2,
        rngs: nnx.Rngs,
    ):
        self.encoder = Encoder(pset, dim, depth, heads, rngs=rngs)
        self.head = nnx.Linear(dim, pset.vocab_size, rngs=rngs)

    def __call__(self, tokens: Int[HostOrDevice, "b l"]) -> Float[Array, "b l vocab"]:
        return self.head(self.encoder(tokens))


class CrossoverModel(nnx.Module):
    """Crossover-point model: a score per position of the parent and of the donor, each
    conditioned on a pooled summary of the other expression."""

    def __init__(
        self,
        pset: PrimitiveSet,
        *,
        dim: int = 32,
        depth: int = 2,
        heads: int = 2,
        rngs: nnx.Rngs,
    ):
        self.pad = pset.pad
        self.encoder = Encoder(pset, dim, depth, heads, rngs=rngs)
        self.hidden = nnx.Linear(2 * dim, dim, rngs=rngs)
        self.score = nnx.Linear(dim, 2, rngs=rngs)

    def __call__(
        self, parent: Int[HostOrDevice, "b l"], donor: Int[HostOrDevice, "b l"]
    ) -> tuple[Float[Array, "b l"], Float[Array, "b l"]]:
        b = parent.shape[0]
        h = self.encoder(jnp.concatenate([parent, donor], axis=0))
        keep = (jnp.concatenate([parent, donor], axis=0) != self.pad)[..., None]
        pooled = jnp.sum(h * keep, axis=1) / jnp.maximum(jnp.sum(keep, axis=1), 1)
        other = jnp.concatenate([pooled[b:], pooled[:b]], axis=0)  # parent <-> donor
        other = jnp.broadcast_to(other[:, None, :], h.shape)
        s = self.score(jnp.tanh(self.hidden(jnp.concatenate([h, other], axis=-1))))
        return s[:b, :, 0], s[b:, :, 1]


def masked_point_logits(
    logits: Float[Array, "b l vocab"], point: Int[HostOrDevice, " b"], allowed: HostOrDevice
) -> Float[Array, "b vocab"]:
    """Logits at each row's masked point, with disallowed tokens at ``-inf``."""
    at = jnp.take_along_axis(logits, point[:, None, None], axis=1)[:, 0]
    return jnp.where(allowed, at, -jnp.inf)


def node_logits(scores: Float[Array, "b l"], tokens: Int[HostOrDevice, "b l"], pad: int):
    """Position scores with padding positions at ``-inf``."""
    return jnp.where(tokens != pad, scores, -jnp.inf)
