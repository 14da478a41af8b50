"""A GPT-2-style decoder in Flax NNX and the byte-level text data for the EDGC experiment."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def load_text_bytes() -> np.ndarray:
    """CPython's own help topics (`pydoc_data.topics`), ~460k characters of English text."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)


def batches(data: np.ndarray, *, batch: int, seq: int, seed: int):
    """Endless random windows: (inputs, targets) int32 arrays of shape (batch, seq)."""
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, data.shape[0] - seq - 1, size=batch)
        idx = starts[:, None] + np.arange(seq + 1)[None, :]
        win = data[idx]
        yield win[:, :-1], win[:, 1:]


class Block(nnx.Module):
    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
        self.heads = heads
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.qkv = nnx.Linear(dim, 3 * dim, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.fc = nnx.Linear(dim, 4 * dim, rngs=rngs)
        self.out = nnx.Linear(4 * dim, dim, rngs=rngs)

    def __call__(self, x):
        b, t, d = x.shape
        h = self.qkv(self.ln1(x)).reshape(b, t, 3, self.heads, d // self.heads)
        q, k, v = h[:, :, 0], h[:, :, 1], h[:, :, 2]
        att = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(d // self.heads)
        mask = jnp.tril(jnp.ones((t, t), bool))[None, None]
        att = jax.nn.softmax(jnp.where(mask, att, -1e9), axis=-1)
        x = x + self.proj(jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t, d))
        return x + self.out(jax.nn.gelu(self.fc(self.ln2(x))))


class GPT(nnx.Module):
    def __init__(self, *, vocab: int, dim: int, heads: int, layers: int, seq: int, rngs: nnx.Rngs):
        self.tok = nnx.Embed(vocab, dim, rngs=rngs)
        self.pos = nnx.Param(jax.random.normal(rngs.params(), (seq, dim)) * 0.02)
        self.blocks = nnx.List([Block(dim, heads, rngs=rngs) for _ in range(layers)])
        self.ln = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, vocab, use_bias=False, rngs=rngs)

    def __call__(self, tokens):
        x = self.tok(tokens) + self.pos[...][None, : tokens.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def stage_of(path, shape, *, layers: int, stages: int) -> int:
    """Pipeline stage of a parameter: embeddings with the first blocks, the head with the last."""
    keys = [getattr(p, "key", getattr(p, "idx", None)) for p in path]
    if "blocks" in keys:
        layer = int(keys[keys.index("blocks") + 1])
        return min(layer * stages // layers, stages - 1)
    return 0 if keys[0] in ("tok", "pos") else stages - 1


def edgc_options(config, start: int) -> dict:
    """`grad_compress.edgc` keyword arguments from the config (data-parallel and pipeline runs)."""
    return dict(
        init_rank=config.init_rank,
        min_rank=config.min_rank,
        max_rank=config.max_rank,
        window=config.window,
        period=config.period,
        fraction=config.fraction,
        block=config.entropy_block,
        bins=config.bins,
        hysteresis_bits=config.hysteresis_bits,
        start_step=start,
    )
