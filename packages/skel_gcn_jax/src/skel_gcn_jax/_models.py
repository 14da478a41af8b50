"""KGS-GCN and the baselines it builds on, as one configurable Flax NNX classifier.

`GCNClassifier(config)` maps `(N, 3, T, 25, M)` skeletons to `(N, classes)` logits:
- `topology`: "physical" (ST-GCN's fixed partitions), "learned" (+ a learned offset B, 2s-AGCN),
  "bhattacharyya" (+ a per-sample prior from the Bhattacharyya overlap of the joints'
  Gaussians, mixed in with a learned weight per partition: KGS-GCN's probabilistic topology);
- `learn_offset`: whether every block adds a learned offset B; None (default) means "with the
  learned and Bhattacharyya topologies, not with the physical one", so `topology="bhattacharyya",
  learn_offset=False` is the prior alone (KGS-GCN's default is prior + offset);
- `temporal`: "multiscale" (dilated (5, 1) branches + 1x1, MS-G3D/CTR-GCN style) or "single"
  (one (9, 1) convolution, ST-GCN's temporal block);
- `block`: "gcn" (dense partitioned graph conv) or "ctr" (CTR-GCN-style channel-wise refinement);
- `fusion`: "none", "gate" (KGS-GCN's visual context gating: the rendered heatmaps are encoded
  per frame and scale every block's output by `2 sigmoid(W c_t)`, identity at init) or "concat"
  (the ablation: the pooled visual context is concatenated before the classifier).
The factories `kgs_gcn_config`, `st_gcn_config`, `ctr_gcn_config` give the paper's model and its
baselines; `HeatmapCNN` is the heatmap-only PoseC3D-lite baseline.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ._graph import spatial_partitions_np
from ._layers import HeatmapEncoder, STBlock
from ._preprocess import valid_mask
from ._splat import DEFAULT_SPLAT, SplatConfig, render_heatmaps
from ._topology import bhattacharyya_adjacency, joint_gaussians
from ._types import Logits, SkeletonBatch

ISOTROPIC_SPLAT = DEFAULT_SPLAT._replace(isotropic=True)
SEPARABLE_SPLAT = DEFAULT_SPLAT._replace(separable=True)  # KGS-GCN's default renderer


class ModelConfig(NamedTuple):
    num_classes: int = 12
    channels: tuple[int, ...] = (32, 32, 64, 64)
    block: str = "gcn"
    topology: str = "bhattacharyya"
    fusion: str = "gate"
    splat: SplatConfig = DEFAULT_SPLAT
    visual_width: int = 16
    visual_dim: int = 32
    topology_temperature: float = 1.0
    learn_offset: bool | None = None
    temporal: str = "multiscale"


def learns_offset(config: ModelConfig) -> bool:
    """Whether the blocks of `GCNClassifier(config)` carry a learned adjacency offset."""
    if config.learn_offset is None:
        return config.topology != "physical"
    return config.learn_offset


def kgs_gcn_config(num_classes: int, channels=(32, 32, 64, 64), **kw) -> ModelConfig:
    """KGS-GCN; renders with the separable splat unless `splat=` says otherwise."""
    kw.setdefault("splat", SEPARABLE_SPLAT)
    return ModelConfig(num_classes=num_classes, channels=tuple(channels), **kw)


def st_gcn_config(num_classes: int, channels=(32, 32, 64, 64), **kw) -> ModelConfig:
    """ST-GCN: physical partitions, no visual stream, one (9, 1) temporal convolution per block."""
    kw.setdefault("temporal", "single")
    return ModelConfig(
        num_classes=num_classes, channels=tuple(channels), topology="physical", fusion="none", **kw
    )


def ctr_gcn_config(num_classes: int, channels=(32, 32, 64, 64), **kw) -> ModelConfig:
    return ModelConfig(
        num_classes=num_classes,
        channels=tuple(channels),
        block="ctr",
        topology="physical",
        fusion="none",
        **kw,
    )


def _check_config(c: ModelConfig) -> None:
    if c.block not in ("gcn", "ctr"):
        raise ValueError(f"config.block: expected 'gcn' or 'ctr', got {c.block!r}")
    if c.topology not in ("physical", "learned", "bhattacharyya"):
        raise ValueError(
            "config.topology: expected 'physical', 'learned' or 'bhattacharyya', "
            f"got {c.topology!r}"
        )
    if c.topology == "physical" and c.learn_offset:
        raise ValueError(
            "config.learn_offset: the physical graph plus an offset is topology='learned'"
        )
    if c.topology == "learned" and c.learn_offset is False:
        raise ValueError("config.learn_offset: topology='learned' without an offset is 'physical'")
    if c.temporal not in ("multiscale", "single"):
        raise ValueError(f"config.temporal: expected 'multiscale' or 'single', got {c.temporal!r}")
    if c.fusion not in ("none", "gate", "concat"):
        raise ValueError(f"config.fusion: expected 'none', 'gate' or 'concat', got {c.fusion!r}")
    if c.num_classes < 2 or not c.channels or min(c.channels) < 3:
        raise ValueError(f"config: expected num_classes >= 2 and channels >= 3, got {c}")


def check_skeletons(x: jax.Array, name: str = "x") -> None:
    """Host-side validation of a `(N, 3, T, 25, M)` float batch (shape, dtype, finiteness)."""
    if not hasattr(x, "shape") or x.ndim != 5 or x.shape[1] != 3 or x.shape[3] != 25:
        raise ValueError(f"{name}: expected shape (N, 3, T, 25, M), got {getattr(x, 'shape', x)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")
    if x.shape[0] == 0 or x.shape[2] == 0:
        raise ValueError(f"{name}: expected a non-empty batch and time axis, got {x.shape}")
    if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{name}: contains NaN or inf (mark missing joints with 0)")


@functools.cache
def _partitions() -> np.ndarray:
    return spatial_partitions_np()


def _positions(x: jax.Array | np.ndarray) -> tuple[jax.Array, jax.Array]:
    """`(N, 3, T, V, M)` -> positions `(N, M, T, V, 3)` and valid `(N, M, T, V)`."""
    return jnp.transpose(x, (0, 4, 2, 3, 1)), jnp.transpose(valid_mask(x)[:, 0], (0, 3, 1, 2))


def render_skeleton_heatmaps(x: SkeletonBatch, config: SplatConfig = DEFAULT_SPLAT) -> jax.Array:
    """Heatmaps `(N, T, views, groups, G, G)` of all persons of `(N, 3, T, 25, M)` skeletons."""
    pos, valid = _positions(x)
    return jnp.sum(render_heatmaps(pos, valid, config), axis=1)


class GCNClassifier(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        _check_config(config)
        self.config = config
        k = _partitions().shape[0]
        cin, blocks, gates = 3, [], []
        for c in config.channels:
            blocks.append(
                STBlock(
                    cin,
                    c,
                    k,
                    kind=config.block,
                    learn_offset=learns_offset(config),
                    temporal=config.temporal,
                    rngs=rngs,
                )
            )
            if config.fusion == "gate":
                gates.append(
                    nnx.Linear(config.visual_dim, c, kernel_init=nnx.initializers.zeros, rngs=rngs)
                )
            cin = c
        self.blocks = nnx.List(blocks)
        self.gates = nnx.List(gates)
        self.prior_weight = (
            nnx.Param(jnp.full((k,), 0.5, jnp.float32))
            if config.topology == "bhattacharyya"
            else None
        )
        if config.fusion != "none":
            ch = len(config.splat.views) * (max(config.splat.groups) + 1)
            self.visual = HeatmapEncoder(ch, config.visual_width, config.visual_dim, rngs=rngs)
        else:
            self.visual = None
        head_in = cin + (config.visual_dim if config.fusion == "concat" else 0)
        self.head = nnx.Linear(head_in, config.num_classes, rngs=rngs)

    def sample_prior(self, x: SkeletonBatch) -> jax.Array | None:
        """The row-normalised Bhattacharyya prior `(N*M, V, V)` of each skeleton, or None."""
        if self.config.topology != "bhattacharyya":
            return None
        pos, valid = _positions(x)
        n, m = pos.shape[:2]
        mean, cov = joint_gaussians(pos, valid, min_var=self.config.splat.sigma**2)
        prior = bhattacharyya_adjacency(mean, cov, temperature=self.config.topology_temperature)
        prior = prior / jnp.sum(prior, axis=-1, keepdims=True)
        return prior.reshape(n * m, *prior.shape[-2:])

    def adjacency(self, x: SkeletonBatch) -> jax.Array:
        """The adjacency the blocks use: `(K, V, V)`, or `(N*M, K, V, V)` with the
        Bhattacharyya prior (before each block's learned offset, if any)."""
        base = jnp.asarray(_partitions(), x.dtype)
        prior = self.sample_prior(x)
        if prior is None:
            return base
        return base[None] + self.prior_weight[...][None, :, None, None] * prior[:, None]

    def __call__(self, x: SkeletonBatch, heatmaps: jax.Array | None = None) -> Logits:
        """Logits for `(N, 3, T, 25, M)` skeletons; `heatmaps` may be passed precomputed
        (`render_skeleton_heatmaps(x, config.splat)`), otherwise they are rendered here."""
        n, _, t, v, m = x.shape
        adj = self.adjacency(x)
        ctx = None
        if self.visual is not None:
            if heatmaps is None:
                heatmaps = render_skeleton_heatmaps(x, self.config.splat)
            ctx = self.visual(heatmaps)  # (N, T, D)
        h = jnp.transpose(x, (0, 4, 2, 3, 1)).reshape(n * m, t, v, 3)
        for i, block in enumerate(self.blocks):
            gate = None
            if self.config.fusion == "gate":
                g = 2.0 * jax.nn.sigmoid(self.gates[i](ctx))
                gate = jnp.repeat(g, m, axis=0)
            h = block(h, adj, gate)
        feat = jnp.mean(h, axis=(1, 2)).reshape(n, m, -1).mean(axis=1)
        if self.config.fusion == "concat":
            feat = jnp.concatenate([feat, jnp.mean(ctx, axis=1)], axis=-1)
        return self.head(feat)


class HeatmapCNN(nnx.Module):
    """PoseC3D-lite, the heatmap-only baseline (no graph): the skeleton's rendered heatmap
    volume `(T, G, G)` with `views x groups` channels (isotropic splats by default, like
    PoseC3D's pseudo-heatmaps) -> three strided 3x3x3 convolutions -> global average -> linear."""

    def __init__(
        self,
        num_classes: int,
        *,
        width: int = 16,
        splat: SplatConfig = ISOTROPIC_SPLAT,
        rngs: nnx.Rngs,
    ):
        if num_classes < 2:
            raise ValueError(f"num_classes: expected >= 2, got {num_classes}")
        if width < 1:
            raise ValueError(f"width: expected >= 1, got {width}")
        self.splat = splat
        ch = len(splat.views) * (max(splat.groups) + 1)
        self.in_channels = ch
        self.c1 = nnx.Conv(ch, width, kernel_size=(3, 3, 3), strides=(1, 2, 2), rngs=rngs)
        self.c2 = nnx.Conv(width, 2 * width, kernel_size=(3, 3, 3), strides=(2, 2, 2), rngs=rngs)
        self.c3 = nnx.Conv(
            2 * width, 4 * width, kernel_size=(3, 3, 3), strides=(2, 1, 1), rngs=rngs
        )
        self.head = nnx.Linear(4 * width, num_classes, rngs=rngs)

    def __call__(self, x: SkeletonBatch, heatmaps: jax.Array | None = None) -> Logits:
        if heatmaps is None:
            heatmaps = render_skeleton_heatmaps(x, self.splat)
        if (
            heatmaps.ndim != 6
            or heatmaps.shape[0] != x.shape[0]
            or heatmaps.shape[2] * heatmaps.shape[3] != self.in_channels
            or heatmaps.shape[4] != heatmaps.shape[5]
        ):
            raise ValueError(
                f"heatmaps: expected (N={x.shape[0]}, T, views, groups, G, G) with views x groups"
                f" = {self.in_channels}, got {heatmaps.shape}"
            )
        n, t, k, p, g, _ = heatmaps.shape
        h = heatmaps.reshape(n, t, k * p, g, g).transpose(0, 1, 3, 4, 2)
        h = jax.nn.relu(self.c1(h))
        h = jax.nn.relu(self.c2(h))
        h = jax.nn.relu(self.c3(h))
        return self.head(jnp.mean(h, axis=(1, 2, 3)))


def count_params(model: nnx.Module) -> int:
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param))))


@functools.lru_cache(maxsize=256)
def config_params(config: ModelConfig) -> int:
    """Parameter count of `GCNClassifier(config)` (shapes only, nothing is initialised)."""
    return count_params(nnx.eval_shape(lambda: GCNClassifier(config, rngs=nnx.Rngs(0))))


def widen_to_params(config: ModelConfig, target: int) -> ModelConfig:
    """`config` with every block's width scaled by one common factor (up or down) so that its
    parameter count is as close as possible to `target` (for parameter-matched baselines)."""
    _check_config(config)
    if target < config_params(config._replace(channels=(3,) * len(config.channels))):
        raise ValueError(f"target: expected at least the narrowest model's size, got {target}")

    def scaled(f):
        return config._replace(channels=tuple(max(3, round(c * f)) for c in config.channels))

    lo, hi = 0.0, 1.0
    while config_params(scaled(hi)) < target:
        lo, hi = hi, 2.0 * hi
    for _ in range(12):  # bisection on the (monotone) parameter count
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if config_params(scaled(mid)) < target else (lo, mid)
    best = min((scaled(lo), scaled(hi)), key=lambda c: abs(config_params(c) - target))
    return best
