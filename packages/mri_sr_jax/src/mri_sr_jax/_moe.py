"""MoEDiff-SR: transformer features over multi-scale patch embeddings, a token-level gate and
k expert denoisers whose outputs are aggregated with the gate probabilities.

Token grid: the finest patch size p0 (default 4). Coarser patch embeddings (p = 8, 16, ...) are
repeated onto the fine token grid and summed, so every token sees local texture and wider
structure; a depthwise convolution gives relative position (images vary in size), the noise level
is added, and pre-norm transformer blocks mix all tokens. The gate is a linear layer on the
token features, softmax over experts, broadcast to the token's p0 x p0 pixels.
`gate_local_norm=w` (off by default) divides the gate's input by its local w x w mean
(`local_normalise`), so a smooth multiplicative bias field, which scales an image region's
intensities, hardly changes what the gate sees; `gate_norm="log"` uses the log-intensity
minus its low-pass (`log_highpass`, homomorphic bias removal) instead.
`noise_routing` (off by default) adds a noise-level-dependent, zero-initialised offset to the
gate's logits (`NoiseRouting`), so the routing can depend on noise level and region jointly.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ._nets import ConvDenoiser, FiLMResBlock, NoiseMLP
from ._types import Array, Channels, NoiseLevel


class TransformerBlock(nnx.Module):
    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
        self.n1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=heads, in_features=dim, decode=False, rngs=rngs
        )
        self.n2 = nnx.LayerNorm(dim, rngs=rngs)
        self.m1 = nnx.Linear(dim, 2 * dim, rngs=rngs)
        self.m2 = nnx.Linear(2 * dim, dim, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        x = x + self.attn(self.n1(x))
        return x + self.m2(nnx.gelu(self.m1(self.n2(x))))


def _box_mean(x: Array, window: int, axis: int) -> Array:
    """Mean over a centred `window` along `axis`, counting only pixels inside the image
    (running sums; no padding, no large constant to fold at compile time)."""
    n = x.shape[axis]
    lo = (window - 1) // 2
    c = jnp.cumsum(x, axis=axis)
    c = jnp.concatenate([jnp.zeros_like(jnp.take(c, jnp.arange(1), axis=axis)), c], axis=axis)
    i = np.arange(n)
    hi_idx = np.minimum(i + window - lo, n)
    lo_idx = np.maximum(i - lo, 0)
    total = jnp.take(c, hi_idx, axis=axis) - jnp.take(c, lo_idx, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = n
    return total / (hi_idx - lo_idx).astype(np.float32).reshape(shape)


def local_normalise(x: Array, window: int, eps: float = 0.05) -> Array:
    """x / (local mean of |x| over a `window` x `window` neighbourhood + eps), per channel,
    for images (b, h, w, c).

    A multiplicative field that is nearly constant over the window cancels out: for
    x = b * y with b smooth, the result is (nearly) y / (local mean of |y| + eps / b).
    The mean counts only pixels inside the image (no zero padding at the borders).
    """
    if window < 1:
        raise ValueError(f"window: expected >= 1, got {window}")
    mean = _box_mean(_box_mean(jnp.abs(x), window, 1), window, 2)
    return x / (mean + eps)


def log_highpass(x: Array, window: int, eps: float = 0.05) -> Array:
    """log(|x| + eps) minus its low-pass, per channel, for images (b, h, w, c).

    Homomorphic bias removal: a multiplicative field b becomes the additive log b, which a
    low-pass keeps and the difference removes. The low-pass is the `window` x `window` box
    mean applied twice (a triangle filter of support 2 window - 1, counting only pixels
    inside the image), so a log field that is affine over the support cancels exactly away
    from the borders. Zero-mean over smooth regions, unlike `local_normalise` (around 1).
    """
    if window < 1:
        raise ValueError(f"window: expected >= 1, got {window}")
    lx = jnp.log(jnp.abs(x) + eps)
    low = lx
    for _ in range(2):
        low = _box_mean(_box_mean(low, window, 1), window, 2)
    return lx - low


GATE_NORMS = ("divide", "log")


class FeatureExtractor(nnx.Module):
    """Multi-scale patch embeddings + transformer -> token features (b, h/p0, w/p0, dim).

    `local_norm=w > 0`: the conditioning is divided by its local w x w mean first
    (`local_normalise`: invariant to a smooth multiplicative bias field); 0 = raw input.
    `local_norm_kind="log"`: log-intensity minus its low-pass instead (`log_highpass`).
    """

    def __init__(
        self,
        cond_channels: int,
        dim: int = 24,
        patch_sizes: tuple[int, ...] = (4, 8),
        depth: int = 1,
        heads: int = 2,
        local_norm: int = 0,
        local_norm_kind: str = "divide",
        *,
        rngs: nnx.Rngs,
    ):
        if local_norm < 0:
            raise ValueError(f"local_norm: expected >= 0, got {local_norm}")
        if local_norm_kind not in GATE_NORMS:
            raise ValueError(
                f"local_norm_kind: expected one of {GATE_NORMS}, got {local_norm_kind!r}"
            )
        self.local_norm = local_norm
        self.local_norm_kind = local_norm_kind
        self.patch_sizes = tuple(patch_sizes)
        self.embeds = nnx.List(
            [
                nnx.Conv(cond_channels, dim, (p, p), strides=(p, p), padding="VALID", rngs=rngs)
                for p in self.patch_sizes
            ]
        )
        self.pos = nnx.Conv(dim, dim, (3, 3), feature_group_count=dim, rngs=rngs)
        self.noise = NoiseMLP(dim, rngs=rngs)
        self.blocks = nnx.List([TransformerBlock(dim, heads, rngs=rngs) for _ in range(depth)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)

    def __call__(self, cond: Channels, alpha_bar: NoiseLevel) -> Array:
        if self.local_norm:
            norm = log_highpass if self.local_norm_kind == "log" else local_normalise
            cond = norm(cond, self.local_norm)
        p0 = self.patch_sizes[0]
        b, h, w, _ = cond.shape
        th, tw = h // p0, w // p0
        tokens = 0.0
        for p, embed in zip(self.patch_sizes, self.embeds, strict=True):
            e = embed(cond)
            r = p // p0
            e = jnp.repeat(jnp.repeat(e, r, axis=1), r, axis=2)
            ph, pw = max(th - e.shape[1], 0), max(tw - e.shape[2], 0)
            e = jnp.pad(e, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
            tokens = tokens + e[:, :th, :tw]
        tokens = tokens + self.pos(tokens) + self.noise(alpha_bar)[:, None, None, :]
        x = tokens.reshape(b, th * tw, -1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x).reshape(b, th, tw, -1)


def gate_to_pixels(gate_tokens: Array, patch: int, method: str = "nearest") -> Array:
    """Token gate probabilities (b, th, tw, k) -> pixels (b, th*p, tw*p, k).

    "nearest" repeats each token over its p x p pixels; "linear" interpolates bilinearly
    between token centres (non-negative weights summing to 1, so each pixel's gate is still a
    distribution over experts) and avoids p-periodic seams where neighbouring tokens differ.
    """
    if method not in ("nearest", "linear"):
        raise ValueError(f"method: expected 'nearest' or 'linear', got {method!r}")
    if method == "linear":
        b, th, tw, k = gate_tokens.shape
        return jax.image.resize(gate_tokens, (b, th * patch, tw * patch, k), "linear")
    return jnp.repeat(jnp.repeat(gate_tokens, patch, axis=1), patch, axis=2)


def aggregate(expert_outputs: Array, gate_pixels: Array) -> Array:
    """Gate-weighted sum over the expert axis: (b, h, w, k) x (b, h, w, k) -> (b, h, w, 1)."""
    return jnp.einsum("bhwk,bhwk->bhw", expert_outputs, gate_pixels)[..., None]


def aggregate_reference(expert_outputs: Array, gate_pixels: Array) -> Array:
    """The same aggregation as an explicit loop over experts (reference for tests)."""
    out = jnp.zeros(expert_outputs.shape[:-1])
    for i in range(expert_outputs.shape[-1]):
        out = out + expert_outputs[..., i] * gate_pixels[..., i]
    return out[..., None]


NOISE_ROUTINGS = ("none", "embedding", "bands")


class NoiseRouting(nnx.Module):
    """Per-expert gate logit offsets (b, k) that depend only on the noise level.

    "embedding": a linear map of the noise embedding the experts receive (eDiff-I-style
    noise-level experts, learned jointly with the region routing); "bands": a piecewise-linear
    function of gamma = sqrt(alpha_bar) per expert with `knots` equally spaced knots on [0, 1]
    (a learned split of the noise range between experts). The weights are named `bias` and
    start at zero (so `init_fast` zeros them too): the model starts as the noise-blind gate.
    """

    def __init__(self, kind: str, num_experts: int, emb_dim: int, knots: int = 5):
        if kind not in NOISE_ROUTINGS[1:]:
            raise ValueError(f"noise_routing: expected one of {NOISE_ROUTINGS}, got {kind!r}")
        if knots < 2:
            raise ValueError(f"noise_knots: expected >= 2, got {knots}")
        self.kind = kind
        rows = emb_dim if kind == "embedding" else knots
        self.bias = nnx.Param(jnp.zeros((rows, num_experts)))

    def basis(self, alpha_bar: NoiseLevel, emb: Array | None) -> Array:
        """The (b, rows) inputs of the linear map: `emb`, or the hat functions of gamma."""
        if self.kind == "embedding":
            return emb
        knots = self.bias.shape[0]
        pos = jnp.sqrt(alpha_bar)[:, None] * (knots - 1)
        return nnx.relu(1.0 - jnp.abs(pos - jnp.arange(knots, dtype=pos.dtype)[None, :]))

    def __call__(self, alpha_bar: NoiseLevel, emb: Array | None) -> Array:
        return self.basis(alpha_bar, emb) @ self.bias[...]


class SharedTrunk(nnx.Module):
    """Noise embedding, input convolution and FiLM residual blocks shared by all experts."""

    def __init__(
        self,
        cond_channels: int,
        width: int,
        depth: int,
        emb_dim: int,
        feature_dim: int = 0,
        *,
        scale_input: bool = False,
        rngs: nnx.Rngs,
    ):
        self.scale_input = scale_input
        self.noise = NoiseMLP(emb_dim, rngs=rngs)
        self.inp = nnx.Conv(1 + cond_channels, width, (3, 3), rngs=rngs)
        self.fuse = nnx.Linear(feature_dim, width, rngs=rngs) if feature_dim else None
        self.blocks = nnx.List([FiLMResBlock(width, emb_dim, rngs=rngs) for _ in range(depth)])

    def __call__(self, x_t, cond, alpha_bar, tokens=None):
        emb = self.noise(alpha_bar)
        if self.scale_input:
            x_t = x_t * jnp.sqrt(alpha_bar)[:, None, None, None]
        h = self.inp(jnp.concatenate([x_t, cond], axis=-1))
        if self.fuse is not None:
            # bilinear, not token-constant: blocks of p0 x p0 would add p0-periodic edges
            f = self.fuse(tokens)
            h = h + jax.image.resize(f, h.shape[:3] + f.shape[-1:], "linear")
        for block in self.blocks:
            h = block(h, emb)
        return h, emb


class ExpertHead(nnx.Module):
    """An expert on top of the shared trunk: its own FiLM residual blocks and output conv.

    `in_width` (the trunk's width) != `width`: the expert's blocks form a bottleneck branch,
    h + up(blocks(down(h))) with 1 x 1 convolutions `down` (in_width -> width) and `up`
    (width -> in_width), so the trunk's features still reach the output conv in full and the
    expert adds its own nonlinear refinement at a small cost in parameters.
    """

    def __init__(
        self, width: int, depth: int, emb_dim: int, in_width: int | None = None, *, rngs: nnx.Rngs
    ):
        in_width = width if in_width is None else in_width
        branch = in_width != width
        self.down = nnx.data(nnx.Conv(in_width, width, (1, 1), rngs=rngs) if branch else None)
        self.up = nnx.data(nnx.Conv(width, in_width, (1, 1), rngs=rngs) if branch else None)
        self.blocks = nnx.List([FiLMResBlock(width, emb_dim, rngs=rngs) for _ in range(depth)])
        self.out = nnx.Conv(in_width, 1, (3, 3), rngs=rngs)

    def __call__(self, h: Array, emb: Array) -> Array:
        if self.down is None:
            for block in self.blocks:
                h = block(h, emb)
        else:
            b = self.down(h)
            for block in self.blocks:
                b = block(b, emb)
            h = h + self.up(nnx.silu(b))
        return self.out(nnx.silu(h))


class MoEDiffSR(nnx.Module):
    """Token-level mixture of k expert denoisers gated by transformer features.

    `model(x_t, cond, alpha_bar)` returns the aggregated output (b, h, w, 1);
    `scale_input` is passed to every expert (see `ConvDenoiser`).
    `trunk_depth=0`: k independent `ConvDenoiser` experts of `expert_depth` blocks.
    `trunk_depth>0`: the experts share a `SharedTrunk` of `trunk_depth` blocks and differ in
    their last `expert_depth` blocks and output conv (`ExpertHead`); the blocks are
    `head_width` wide (0 = `expert_width`, the trunk's width; otherwise a residual bottleneck
    branch on the trunk's output, see `ExpertHead`);
    `fuse_features=True` also adds a linear projection of the transformer token features to
    the trunk's first activations, so the denoiser sees the global context the gate sees.
    `gate_upsample`: how token gates reach pixels for the aggregation (see `gate_to_pixels`).
    `gate_local_norm=w > 0`: the feature extractor (hence the gate) sees the conditioning
    divided by its local w x w mean (bias-field robust routing; the experts see the raw input);
    `gate_norm="log"`: the log-intensity minus its low-pass instead (`log_highpass`).
    `noise_routing="embedding"`: the gate's logits also get a zero-initialised linear map of
    the noise embedding the experts receive (the shared trunk's; the feature extractor's
    without a trunk), so routing can depend on noise level and region jointly (+`emb_dim` x k
    parameters, `feature_dim` x k without a trunk); `"bands"`: a zero-initialised per-expert
    piecewise-linear function of sqrt(alpha_bar) with `noise_knots` knots (+`noise_knots` x k).
    The feature extractor already adds its own noise embedding to the tokens, so the gate
    could route by noise level before; this gives it a direct, per-expert path.
    `model.forward_all(...)` also returns every expert's output (b, h, w, k) and the token gate
    probabilities (b, h/p0, w/p0, k), which the training losses need.
    """

    def __init__(
        self,
        cond_channels: int,
        num_experts: int = 3,
        expert_width: int = 12,
        expert_depth: int = 3,
        feature_dim: int = 24,
        patch_sizes=(4, 8),
        transformer_depth: int = 1,
        heads: int = 2,
        emb_dim: int = 16,
        trunk_depth: int = 0,
        fuse_features: bool = False,
        gate_upsample: str = "nearest",
        gate_local_norm: int = 0,
        head_width: int = 0,
        gate_norm: str = "divide",
        noise_routing: str = "none",
        noise_knots: int = 5,
        *,
        scale_input: bool = False,
        rngs: nnx.Rngs,
    ):
        if head_width < 0:
            raise ValueError(f"head_width: expected >= 0, got {head_width}")
        if noise_routing not in NOISE_ROUTINGS:
            raise ValueError(
                f"noise_routing: expected one of {NOISE_ROUTINGS}, got {noise_routing!r}"
            )
        if noise_knots < 2:
            raise ValueError(f"noise_knots: expected >= 2, got {noise_knots}")
        if gate_norm not in GATE_NORMS:
            raise ValueError(f"gate_norm: expected one of {GATE_NORMS}, got {gate_norm!r}")
        if head_width and not trunk_depth:
            raise ValueError("head_width: needs a shared trunk (trunk_depth >= 1)")
        if trunk_depth < 0:
            raise ValueError(f"trunk_depth: expected >= 0, got {trunk_depth}")
        if fuse_features and not trunk_depth:
            raise ValueError("fuse_features: needs a shared trunk (trunk_depth >= 1)")
        if num_experts < 1:
            raise ValueError(f"num_experts: expected >= 1, got {num_experts}")
        if any(p % patch_sizes[0] for p in patch_sizes):
            raise ValueError(f"patch_sizes: expected multiples of the first, got {patch_sizes}")
        if gate_upsample not in ("nearest", "linear"):
            raise ValueError(
                f"gate_upsample: expected 'nearest' or 'linear', got {gate_upsample!r}"
            )
        self.patch = patch_sizes[0]
        self.gate_upsample = gate_upsample
        self.num_experts = num_experts
        self.features = FeatureExtractor(
            cond_channels,
            feature_dim,
            tuple(patch_sizes),
            transformer_depth,
            heads,
            gate_local_norm,
            gate_norm,
            rngs=rngs,
        )
        self.gate = nnx.Linear(feature_dim, num_experts, rngs=rngs)
        if trunk_depth:
            self.trunk = nnx.data(
                SharedTrunk(
                    cond_channels,
                    expert_width,
                    trunk_depth,
                    emb_dim,
                    feature_dim if fuse_features else 0,
                    scale_input=scale_input,
                    rngs=rngs,
                )
            )
            experts = [
                ExpertHead(
                    head_width or expert_width, expert_depth, emb_dim, expert_width, rngs=rngs
                )
                for _ in range(num_experts)
            ]
        else:
            self.trunk = nnx.data(None)
            experts = [
                ConvDenoiser(
                    cond_channels,
                    expert_width,
                    expert_depth,
                    emb_dim,
                    scale_input=scale_input,
                    rngs=rngs,
                )
                for _ in range(num_experts)
            ]
        self.experts = nnx.List(experts)
        # named to sort after every other attribute: `init_fast` fills the state in sorted
        # order, so the rest of the model draws the same values as without it
        self.vary_with_noise = nnx.data(
            None
            if noise_routing == "none"
            else NoiseRouting(
                noise_routing, num_experts, emb_dim if trunk_depth else feature_dim, noise_knots
            )
        )

    def forward_all(self, x_t: Channels, cond: Channels, alpha_bar: NoiseLevel):
        h, w = x_t.shape[1:3]
        if h % self.patch or w % self.patch:
            raise ValueError(
                f"x_t: height and width must be multiples of {self.patch}, got {h}x{w}"
            )
        tokens = self.features(cond, alpha_bar)
        logits = self.gate(tokens)
        if self.trunk is None:
            outs = [e(x_t, cond, alpha_bar) for e in self.experts]
            emb = None
        else:
            h, emb = self.trunk(x_t, cond, alpha_bar, tokens)
            outs = [e(h, emb) for e in self.experts]
        if self.vary_with_noise is not None:
            if emb is None and self.vary_with_noise.kind == "embedding":
                emb = self.features.noise(alpha_bar)
            logits = logits + self.vary_with_noise(alpha_bar, emb)[:, None, None, :]
        gate_tokens = jax.nn.softmax(logits, axis=-1)
        outs = jnp.concatenate(outs, axis=-1)
        agg = aggregate(outs, gate_to_pixels(gate_tokens, self.patch, self.gate_upsample))
        return agg, outs, gate_tokens

    def __call__(self, x_t: Channels, cond: Channels, alpha_bar: NoiseLevel) -> Channels:
        return self.forward_all(x_t, cond, alpha_bar)[0]
