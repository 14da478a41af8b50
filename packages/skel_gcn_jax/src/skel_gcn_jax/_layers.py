"""GCN building blocks (Flax NNX, channels-last `(N, T, V, C)`): dense partitioned graph
convolution, CTR-GCN-style channel-wise topology refinement, multi-scale temporal convolution,
the ST block, and the per-frame heatmap encoder used for visual context."""

import jax
import jax.numpy as jnp
from flax import nnx


class GraphConv(nnx.Module):
    """`y_v = sum_k sum_w A_k[v, w] (x_w W_k)` with a dense `(K, V, V)` or per-sample
    `(N, K, V, V)` adjacency; `learn_offset` adds a learned `(K, V, V)` offset (2s-AGCN's B)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        num_subsets: int,
        num_joints: int = 25,
        *,
        learn_offset: bool = False,
        rngs: nnx.Rngs,
    ):
        self.k, self.cout = num_subsets, cout
        self.proj = nnx.Linear(cin, cout * num_subsets, rngs=rngs)
        self.offset = (
            nnx.Param(jnp.zeros((num_subsets, num_joints, num_joints))) if learn_offset else None
        )

    def __call__(self, x: jax.Array, adjacency: jax.Array) -> jax.Array:
        n, t, v, _ = x.shape
        h = self.proj(x).reshape(n, t, v, self.k, self.cout)
        if self.offset is not None:
            offset = self.offset[...]
            adjacency = adjacency + (offset if adjacency.ndim == 3 else offset[None])
        if adjacency.ndim == 3:
            return jnp.einsum("kvw,ntwkc->ntvc", adjacency, h)
        return jnp.einsum("nkvw,ntwkc->ntvc", adjacency, h)


class CTRGraphConv(nnx.Module):
    """Channel-wise topology refinement (CTR-GCN, lite): per subset,
    `A_k + alpha * expand(tanh(phi(x)_v - psi(x)_w))` gives a `(N, V, V, C)` topology per
    channel."""

    def __init__(
        self, cin: int, cout: int, num_subsets: int, *, reduction: int = 8, rngs: nnx.Rngs
    ):
        r = max(cin // reduction, 4)
        self.k, self.r, self.cout = num_subsets, r, cout
        self.phi = nnx.Linear(cin, r * num_subsets, rngs=rngs)
        self.psi = nnx.Linear(cin, r * num_subsets, rngs=rngs)
        self.xi = nnx.Linear(cin, cout * num_subsets, rngs=rngs)
        self.expand = nnx.Linear(r, cout, rngs=rngs)
        self.alpha = nnx.Param(jnp.zeros(()))

    def __call__(self, x: jax.Array, adjacency: jax.Array) -> jax.Array:
        n, t, v, _ = x.shape
        pooled = jnp.mean(x, axis=1)  # (N, V, C)
        q = self.phi(pooled).reshape(n, v, self.k, self.r)
        kk = self.psi(pooled).reshape(n, v, self.k, self.r)
        rel = jnp.tanh(q[:, :, None] - kk[:, None, :])  # (N, V, W, K, r)
        topo = self.alpha[...] * self.expand(rel)  # (N, V, W, K, C)
        topo = topo + jnp.einsum("kvw->vwk", adjacency)[None, :, :, :, None]
        h = self.xi(x).reshape(n, t, v, self.k, self.cout)
        return jnp.einsum("nvwkc,ntwkc->ntvc", topo, h)


class TemporalConv(nnx.Module):
    """Multi-scale temporal convolution: dilated `(kernel, 1)` branches plus a 1x1 branch,
    concatenated (MS-G3D/CTR-GCN style)."""

    def __init__(self, channels: int, *, kernel: int = 5, dilations=(1, 2), rngs: nnx.Rngs):
        nb = len(dilations) + 1
        widths = [channels // nb] * (nb - 1)
        widths.append(channels - sum(widths))
        self.branches = nnx.List(
            [
                nnx.Conv(
                    channels,
                    w,
                    kernel_size=(kernel, 1),
                    kernel_dilation=(d, 1),
                    padding="SAME",
                    rngs=rngs,
                )
                for w, d in zip(widths[:-1], dilations, strict=True)
            ]
        )
        self.point = nnx.Linear(channels, widths[-1], rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        outs = [b(x) for b in self.branches] + [self.point(x)]
        return jnp.concatenate(outs, axis=-1)


class STBlock(nnx.Module):
    """Graph conv -> LayerNorm -> ReLU -> temporal conv -> LayerNorm, residual, ReLU; an optional
    multiplicative gate `(N, T, C)` (visual context) scales the block output per frame/channel.
    `temporal`: "multiscale" (`TemporalConv`) or "single" (one `(9, 1)` convolution, ST-GCN's)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        num_subsets: int,
        *,
        kind: str = "gcn",
        learn_offset: bool = False,
        temporal: str = "multiscale",
        rngs: nnx.Rngs,
    ):
        if kind == "ctr":
            self.gcn = CTRGraphConv(cin, cout, num_subsets, rngs=rngs)
        else:
            self.gcn = GraphConv(cin, cout, num_subsets, learn_offset=learn_offset, rngs=rngs)
        self.norm1 = nnx.LayerNorm(cout, rngs=rngs)
        if temporal == "single":
            self.tcn = nnx.Conv(cout, cout, kernel_size=(9, 1), padding="SAME", rngs=rngs)
        else:
            self.tcn = TemporalConv(cout, rngs=rngs)
        self.norm2 = nnx.LayerNorm(cout, rngs=rngs)
        self.res = nnx.Linear(cin, cout, rngs=rngs) if cin != cout else None

    def __call__(self, x, adjacency, gate=None):
        h = jax.nn.relu(self.norm1(self.gcn(x, adjacency)))
        h = self.norm2(self.tcn(h))
        if gate is not None:
            h = h * gate[:, :, None, :]
        res = x if self.res is None else self.res(x)
        return jax.nn.relu(h + res)


class HeatmapEncoder(nnx.Module):
    """Per-frame 2-D CNN over `(views x groups)` heatmap channels -> a `(N, T, D)` context."""

    def __init__(self, in_channels: int, width: int, out_dim: int, *, rngs: nnx.Rngs):
        self.c1 = nnx.Conv(in_channels, width, kernel_size=(3, 3), strides=(2, 2), rngs=rngs)
        self.c2 = nnx.Conv(width, 2 * width, kernel_size=(3, 3), strides=(2, 2), rngs=rngs)
        self.out = nnx.Linear(2 * width, out_dim, rngs=rngs)

    def __call__(self, heatmaps: jax.Array) -> jax.Array:
        n, t, k, p, g, _ = heatmaps.shape
        h = heatmaps.reshape(n * t, k * p, g, g).transpose(0, 2, 3, 1)
        h = jax.nn.relu(self.c1(h))
        h = jax.nn.relu(self.c2(h))
        return self.out(jnp.mean(h, axis=(1, 2))).reshape(n, t, -1)
