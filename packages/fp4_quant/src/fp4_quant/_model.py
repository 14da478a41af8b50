"""A small decoder LM in Flax NNX for the study: softmax attention or gated linear attention,
SwiGLU FFN, every projection a `QLinear` routed through `quantized_matmul` by a policy.

Embeddings, positional table, norms, attention scores/values and the LM head stay in f32.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ._e2m1 import key_seed
from ._gla import gla_chunked
from ._hcp import HCPState, hot_channel_patch
from ._matmul import HIGH_PRECISION, MatmulRecipe, quantized_matmul
from ._policy import PrecisionPolicy
from ._types import Array, Float, Int, PRNGKey


class HCPVar(nnx.Variable):
    """Hot-Channel Patch state (scores, channels, count): trained-state, not a parameter."""


class Gate(nnx.Variable):
    """Runtime precision switches of a QLinear as 0/1 floats: [quantize, HCP patch, stochastic
    rounding, RHT, 2-D weight blocks] (see `quantized_matmul`'s `gates`)."""


class ModelConfig(NamedTuple):
    vocab: int = 256
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    seq_len: int = 64
    mixer: str = "gla"  # or "softmax"
    chunk: int = 16
    gk_rank: int = 16
    hcp_period: int = 10
    hcp_decay: float = 0.9


_PROJ_IDS = {
    n: i
    for i, n in enumerate(
        ["qkv_proj", "o_proj", "gk_proj", "gk_proj2", "up_gate_proj", "down_proj"]
    )
}


class QLinear(nnx.Module):
    """y = x @ W (no bias) through `quantized_matmul`, with optional Hot-Channel Patch state."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        recipe: MatmulRecipe,
        hcp_k: int = 0,
        hcp_period: int = 10,
        hcp_decay: float = 0.9,
        std: float = 0.02,
        gates: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0),
        rngs: nnx.Rngs,
    ):
        self.kernel = nnx.Param(std * jax.random.normal(rngs.params(), (d_in, d_out)))
        if recipe.fmt != "none":
            self.gates = Gate(jnp.asarray(gates, jnp.float32))
        self.recipe = recipe
        self.hcp_k = hcp_k
        self.hcp = (
            hot_channel_patch(hcp_k, period=hcp_period, decay=hcp_decay, recipe=recipe)
            if hcp_k
            else None
        )
        if self.hcp is not None:
            s = self.hcp.init(d_in)
            self.hcp_score, self.hcp_channels, self.hcp_count = (HCPVar(a) for a in s)

    def __call__(
        self,
        x: Array,
        *,
        key: PRNGKey | None = None,
        update_hcp: bool = False,
        record: bool = False,
    ) -> Array:
        if record:
            self.sow(nnx.Intermediate, "inputs", x)
        w = self.kernel[...]
        if self.recipe.fmt == "none":
            return x @ w
        channels = self.hcp_channels[...] if self.hcp is not None else None
        y = quantized_matmul(
            x,
            w,
            recipe=self.recipe,
            key=key if self.recipe.needs_key else None,
            hot_channels=channels,
            gates=self.gates[...],
        )
        if update_hcp and self.hcp is not None:
            state = HCPState(self.hcp_score[...], self.hcp_channels[...], self.hcp_count[...])
            new = self.hcp.update(state, x, w)
            self.hcp_score[...], self.hcp_channels[...], self.hcp_count[...] = new
        return y


def _switchable(structure: MatmulRecipe, want: MatmulRecipe) -> bool:
    """Runtime gates can turn quantization off, or turn recipe features off (not on)."""
    if want == HIGH_PRECISION or want == structure:
        return True
    features = ("sr_grad", "rht_wgrad", "weight_2d")
    return want.fmt == structure.fmt and all(
        getattr(structure, f) or not getattr(want, f) for f in features
    )


def _rms(x: Array, eps: float = 1e-6) -> Array:
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)


class _Block(nnx.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        layer: int,
        policy: PrecisionPolicy,
        structure: PrecisionPolicy,
        rngs: nnx.Rngs,
    ):
        self.cfg, self.layer = cfg, layer
        d = cfg.d_model
        self.d_k = d // 2 if cfg.mixer == "gla" else d
        hidden = 16 * round(8 * d / 3 / 16)
        out_std = 0.02 / (2 * cfg.n_layers) ** 0.5

        def lin(name, a, b, std=0.02):
            recipe, hcp_k = structure.recipe_for(layer, name), structure.hcp_k_for(layer, name)
            want, want_k = policy.recipe_for(layer, name), policy.hcp_k_for(layer, name)
            if not _switchable(recipe, want) or want_k not in (0, hcp_k):
                raise ValueError(
                    f"policy: {name} of layer {layer} wants {want} with hcp_k={want_k}, which "
                    f"the structure ({recipe}, hcp_k={hcp_k}) cannot switch to at runtime"
                )
            gates = (float(want.fmt != "none"), float(want_k > 0))
            gates += (float(want.sr_grad), float(want.rht_wgrad), float(want.weight_2d))
            return QLinear(
                a,
                b,
                recipe=recipe,
                hcp_k=min(hcp_k, a),
                hcp_period=cfg.hcp_period,
                hcp_decay=cfg.hcp_decay,
                std=std,
                gates=gates,
                rngs=rngs,
            )

        # Fused input projections (one GEMM each, same numbers as separate 1x16-blocked GEMMs
        # except the shared tensor scale): q|k|v (|g for GLA) and gate|up.
        self.n_in = 2 * self.d_k + (2 * d if cfg.mixer == "gla" else d)
        self.qkv_proj = lin("qkv_proj", d, self.n_in)
        self.o_proj = lin("o_proj", d, d, out_std)
        if cfg.mixer == "gla":
            self.gk_proj = lin("gk_proj", d, cfg.gk_rank)
            self.gk_proj2 = lin("gk_proj", cfg.gk_rank, self.d_k)
            self.gk_bias = nnx.Param(jnp.zeros((self.d_k,)))
            self.head_norm = nnx.Param(jnp.ones((d // cfg.n_heads,)))
        self.hidden = hidden
        self.up_gate_proj = lin("up_gate_proj", d, 2 * hidden)
        self.down_proj = lin("down_proj", hidden, d, out_std)
        self.norm1, self.norm2 = nnx.Param(jnp.ones((d,))), nnx.Param(jnp.ones((d,)))

    def _heads(self, a: Array) -> Array:
        b, t, c = a.shape
        return a.reshape(b, t, self.cfg.n_heads, c // self.cfg.n_heads).transpose(0, 2, 1, 3)

    def __call__(self, x, key, update_hcp, record):
        def proj(name, inp):
            k = None if key is None else key_seed(key, 1 + _PROJ_IDS[name])
            return getattr(self, name)(inp, key=k, update_hcp=update_hcp, record=record)

        b, t, d = x.shape
        h = _rms(x) * self.norm1[...][None, None]
        proj_in = proj("qkv_proj", h)
        dk = self.d_k
        q, k, v = (
            self._heads(a)
            for a in (
                proj_in[..., :dk],
                proj_in[..., dk : 2 * dk],
                proj_in[..., 2 * dk : 2 * dk + d],
            )
        )
        if self.cfg.mixer == "gla":
            gk = (
                jax.nn.log_sigmoid(
                    proj("gk_proj2", proj("gk_proj", h)) + self.gk_bias[...][None, None]
                )
                / 16
            )
            o = gla_chunked(q, k, v, self._heads(gk), self.cfg.chunk)
            o = _rms(o) * self.head_norm[...][None, None, None]
            o = o.transpose(0, 2, 1, 3).reshape(b, t, d) * jax.nn.silu(proj_in[..., 2 * dk + d :])
        else:
            s = jnp.einsum("bhtd,bhsd->bhts", q, k) * q.shape[-1] ** -0.5
            s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -1e30)
            o = jnp.einsum("bhts,bhsd->bhtd", jax.nn.softmax(s, axis=-1), v)
            o = o.transpose(0, 2, 1, 3).reshape(b, t, d)
        x = x + proj("o_proj", o)
        h = _rms(x) * self.norm2[...][None, None]
        gu = proj("up_gate_proj", h)
        f = jax.nn.silu(gu[..., : self.hidden]) * gu[..., self.hidden :]
        return x + proj("down_proj", f)


class DecoderLM(nnx.Module):
    """Byte-level decoder: embed + learned positions -> blocks -> RMSNorm -> f32 head."""

    def __init__(
        self,
        cfg: ModelConfig,
        policy: PrecisionPolicy,
        *,
        rngs: nnx.Rngs,
        structure: PrecisionPolicy | None = None,
    ):
        """`policy` decides each projection's precision. `structure` (default: `policy`) fixes
        the compiled graph; a different `policy` is then realised by runtime `Gate`s, so models
        of several policies share one graph (and one compiled, vmappable training step)."""
        if cfg.mixer not in ("gla", "softmax"):
            raise ValueError(f"cfg.mixer: expected 'gla' or 'softmax', got {cfg.mixer!r}")
        if cfg.d_model % cfg.n_heads or cfg.seq_len % cfg.chunk:
            raise ValueError(f"cfg: d_model % n_heads and seq_len % chunk must be 0, got {cfg}")
        self.cfg = cfg
        self.embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.vocab, cfg.d_model)))
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.seq_len, cfg.d_model)))
        self.blocks = nnx.List(
            [_Block(cfg, i, policy, structure or policy, rngs) for i in range(cfg.n_layers)]
        )
        self.norm = nnx.Param(jnp.ones((cfg.d_model,)))
        self.head = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.d_model, cfg.vocab)))

    def __call__(
        self,
        tokens: Int[Array, "b t"],
        *,
        key: PRNGKey | None = None,
        update_hcp: bool = False,
        record: bool = False,
    ) -> Float[Array, "b t vocab"]:
        # One-hot matmul instead of a gather: shards cleanly along a data-sharded batch.
        x = jax.nn.one_hot(tokens, self.cfg.vocab, dtype=jnp.float32) @ self.embed[...]
        x = x + jax.lax.slice_in_dim(self.pos[...], 0, tokens.shape[1])[None]
        for i, block in enumerate(self.blocks):
            k = None if key is None else key_seed(key, 1000 + i)
            x = block(x, k, update_hcp, record)
        return (_rms(x) * self.norm[...][None, None]) @ self.head[...]


def lm_loss(
    model: DecoderLM,
    tokens: Int[Array, "b t1"],
    *,
    key: PRNGKey | None = None,
    update_hcp: bool = False,
) -> Float[Array, ""]:
    """Mean next-token cross entropy (nats) of `tokens[:, 1:]` given `tokens[:, :-1]`."""
    logits = model(tokens[:, :-1], key=key, update_hcp=update_hcp)
    logp = jax.nn.log_softmax(logits, axis=-1)
    target = jax.nn.one_hot(tokens[:, 1:], logits.shape[-1], dtype=logp.dtype)
    return -jnp.mean(jnp.sum(target * logp, axis=-1))
