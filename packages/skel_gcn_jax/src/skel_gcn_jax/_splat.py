"""Kinematics-driven Gaussian splatting: joints -> anisotropic 3-D Gaussians -> multi-view heatmaps.

Each joint at each frame becomes a Gaussian centred on the joint whose covariance is stretched
along its instantaneous velocity `v`:

    Sigma = sigma^2 I + ((sigma + stretch * |v|)^2 - sigma^2) u u^T,   u = v / |v|,

so a still joint is an isotropic blob and a fast joint a streak along its motion (the
"continuous" trace a sparse sensor misses between samples). Each Gaussian is projected
orthographically into K views (`P Sigma P^T`, `P mu`) and evaluated on a G x G pixel grid; joints
are summed into body-part channels. Everything is differentiable in the joint positions.
`isotropic=True` gives the ablation in which every covariance is `sigma^2 I`.

Two renderers share the projection:
- exact (`separable=False`): every joint's 2-D Gaussian is evaluated on the full G x G grid
  (`V G^2` exponentials per frame and view), laid out joints-last so the sum into body parts is one
  matmul over the minor axis;
- separable (`separable=True`): each view-projected Gaussian `N(mu, [[a, b], [b, d]])` is replaced
  by the product of its two 1-D marginals, scaled by `sqrt(1 - rho^2)` (`rho = b / sqrt(a d)`) so
  that its row and column sums (its u- and v-marginals) equal the exact splat's. A heatmap is then
  `sum_v Y_v X_v^T` over the joints of a part: `2 V G` exponentials and one contraction, never a
  `(V, G, G)` tensor. It is exact whenever the view covariance is diagonal (isotropic splats, motion
  along an image axis) and otherwise drops only the in-view orientation of the streak (its sign of
  correlation), keeping its extent along both image axes.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._graph import BODY_PARTS

# Orthographic projections (rows: image u, image v) for the front (x-y), side (z-y), top (x-z).
DEFAULT_VIEWS = np.array(
    [
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
    ],
    dtype=np.float32,
)


class SplatConfig(NamedTuple):
    """Static settings of the renderer (hashable, so it can be closed over by jit)."""

    grid: int = 16  # heatmap side in pixels
    extent: float = 1.2  # metres from the centre to the heatmap border
    sigma: float = 0.06  # isotropic radius in metres
    stretch: float = 2.0  # metres of elongation per (metre per frame) of speed
    isotropic: bool = False
    separable: bool = False  # product-of-marginals renderer (see module docstring)
    views: tuple = tuple(map(tuple, DEFAULT_VIEWS.reshape(3, 6).tolist()))
    groups: tuple = tuple(BODY_PARTS.tolist())  # body-part channel of each joint


DEFAULT_SPLAT = SplatConfig()


def _check_config(config: SplatConfig) -> None:
    if config.grid < 2:
        raise ValueError(f"config.grid: expected >= 2, got {config.grid}")
    if not (config.extent > 0 and config.sigma > 0 and config.stretch >= 0):
        raise ValueError(
            f"config: expected extent > 0, sigma > 0, stretch >= 0, got "
            f"{config.extent}, {config.sigma}, {config.stretch}"
        )


def joint_velocity(positions: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Instantaneous velocity `(..., T, V, 3)` by central differences (one-sided at the ends).

    Where a joint or one of its neighbouring frames is missing (`valid == 0`), the velocity is 0.
    """
    if positions.ndim < 3 or positions.shape[-1] != 3:
        raise ValueError(f"positions: expected shape (..., T, V, 3), got {positions.shape}")
    if valid is None:
        valid = jnp.ones(positions.shape[:-1], positions.dtype)
    p = positions
    nxt = jnp.concatenate([p[..., 1:, :, :], p[..., -1:, :, :]], axis=-3)
    prv = jnp.concatenate([p[..., :1, :, :], p[..., :-1, :, :]], axis=-3)
    vn = jnp.concatenate([valid[..., 1:, :], valid[..., -1:, :]], axis=-2)
    vp = jnp.concatenate([valid[..., :1, :], valid[..., :-1, :]], axis=-2)
    span = (
        jnp.concatenate(
            [
                jnp.ones_like(p[..., :1, :, :1]),
                2.0 * jnp.ones_like(p[..., 1:-1, :, :1]),
                jnp.ones_like(p[..., -1:, :, :1]),
            ],
            axis=-3,
        )
        if p.shape[-3] > 1
        else jnp.ones_like(p[..., :1])
    )
    return (nxt - prv) / span * (valid * vn * vp)[..., None]


def splat_covariances(
    velocity: jax.Array, *, sigma: float, stretch: float, isotropic: bool = False
) -> jax.Array:
    """`(..., 3, 3)` covariances stretched along `velocity` `(..., 3)` (see module docstring)."""
    eye = jnp.eye(3, dtype=velocity.dtype)
    iso = (sigma**2) * jnp.broadcast_to(eye, (*velocity.shape[:-1], 3, 3))
    if isotropic:
        return iso
    sq = jnp.sum(velocity**2, axis=-1, keepdims=True)
    speed = jnp.sqrt(sq + 1e-12)
    u = velocity / speed
    extra = (sigma + stretch * speed) ** 2 - sigma**2  # >= 0
    return iso + extra[..., None] * u[..., :, None] * u[..., None, :]


def render_heatmaps(
    positions: jax.Array,
    valid: jax.Array | None = None,
    config: SplatConfig = DEFAULT_SPLAT,
) -> jax.Array:
    """Render `(..., T, V, 3)` joints to heatmaps `(..., T, views, groups, G, G)`.

    `valid` `(..., T, V)` weights each joint (0 for missing joints). Pixel `(i, j)` of a view sits
    at `(u_j, v_i)` on a uniform grid of pixel centres over `[-extent, extent]^2`.
    """
    _check_config(config)
    if positions.ndim < 3 or positions.shape[-1] != 3:
        raise ValueError(f"positions: expected shape (..., T, V, 3), got {positions.shape}")
    dtype = positions.dtype
    if valid is None:
        valid = jnp.ones(positions.shape[:-1], dtype)
    mu, a, b, d = _view_gaussians(positions, valid, config)  # (..., T, K, V[, 2])
    g = config.grid
    centres = (jnp.arange(g, dtype=dtype) + 0.5) / g * 2.0 - 1.0
    centres = centres.reshape((1,) * (a.ndim) + (g,))
    onehot = jax.nn.one_hot(jnp.asarray(config.groups), max(config.groups) + 1, dtype=dtype)
    du = centres - mu[..., 0, None]  # (..., T, K, V, G) along image u (columns)
    dv = centres - mu[..., 1, None]  # along image v (rows)
    w = valid[..., None, :]  # (..., T, 1, V)
    if config.separable:
        # product of the marginals N(mu_u, a) N(mu_v, d), mass-matched by sqrt(1 - rho^2)
        scale = w * jnp.sqrt(jnp.clip(1.0 - b * b / (a * d), 0.0, 1.0))
        cols = jnp.exp(-0.5 * du * du / a[..., None]) * scale[..., None]
        rows = jnp.exp(-0.5 * dv * dv / d[..., None])
        return jnp.einsum("...kvi,...kvj,vp->...kpij", rows, cols, onehot)
    det = a * d - b * b
    # joints last: (..., T, K, G, V) profiles, (..., T, K, G rows, G cols, V) densities
    ia, ib, id_ = (c[..., None, None, :] for c in (d / det, -b / det, a / det))
    du, dv = jnp.swapaxes(du, -1, -2), jnp.swapaxes(dv, -1, -2)
    q = (
        ia * du[..., None, :, :] ** 2
        + 2.0 * ib * dv[..., :, None, :] * du[..., None, :, :]
        + id_ * dv[..., :, None, :] ** 2
    )
    dens = jnp.exp(-0.5 * q) * w[..., None, None, :]
    return jnp.moveaxis(dens @ onehot, -1, -3)  # (..., T, K, P, G, G)


def _view_gaussians(positions, valid, config):
    """Per view and joint: the projected centre `(..., T, K, V, 2)` and covariance entries
    `a, b, d` `(..., T, K, V)` of `[[a, b], [b, d]]`, in units of `extent`.

    Written per coordinate with the (static) view matrices as Python constants, so the 3-long
    contractions become a few fused multiply-adds instead of tiny matmuls, using
    `P Sigma P^T = sigma^2 P P^T + e (P u)(P u)^T` with `e = (sigma + stretch |v|)^2 - sigma^2`.
    """
    vel = joint_velocity(positions, valid)
    pos = [positions[..., i] for i in range(3)]  # (..., T, V) each
    vel = [vel[..., i] for i in range(3)]
    sq = vel[0] ** 2 + vel[1] ** 2 + vel[2] ** 2
    speed = jnp.sqrt(sq + 1e-12)
    # e u u^T = (e / |v|^2) v v^T; e / |v|^2 = stretch (2 sigma + stretch |v|) / |v|
    k_e = 0.0 if config.isotropic else config.stretch * (2 * config.sigma + config.stretch * speed)
    k_e = k_e / speed
    ext = config.extent
    mus, aa, bb, dd = [], [], [], []
    for row_u, row_v in np.asarray(config.views, np.float64).reshape(-1, 2, 3).tolist():

        def dot(row, vec):
            terms = [c * x for c, x in zip(row, vec, strict=True) if c != 0.0]
            return sum(terms[1:], terms[0]) if terms else jnp.zeros_like(vec[0])

        pu, pv = dot(row_u, vel), dot(row_v, vel)
        s2 = config.sigma**2 / ext**2
        uu, uv, vv = (
            float(np.dot(r1, r2)) for r1, r2 in ((row_u, row_u), (row_u, row_v), (row_v, row_v))
        )
        mus.append(jnp.stack([dot(row_u, pos), dot(row_v, pos)], axis=-1) / ext)
        aa.append(s2 * uu + k_e * pu * pu / ext**2)
        bb.append(s2 * uv + k_e * pu * pv / ext**2)
        dd.append(s2 * vv + k_e * pv * pv / ext**2)
    return (jnp.stack(mus, axis=-3), *(jnp.stack(c, axis=-2) for c in (aa, bb, dd)))


def render_heatmaps_reference(
    positions: np.ndarray, valid: np.ndarray | None = None, config: SplatConfig = DEFAULT_SPLAT
) -> np.ndarray:
    """Plain numpy loops over sequence, frame, view, joint and pixel (the test oracle)."""
    pos = np.asarray(positions, np.float64)
    lead, (t, v, _) = pos.shape[:-3], pos.shape[-3:]
    pos = pos.reshape(-1, t, v, 3)
    val = (
        np.ones(pos.shape[:-1])
        if valid is None
        else np.asarray(valid, np.float64).reshape(-1, t, v)
    )
    views = np.asarray(config.views, np.float64).reshape(-1, 2, 3)
    groups = np.asarray(config.groups)
    g = config.grid
    centres = (np.arange(g) + 0.5) / g * 2.0 - 1.0
    out = np.zeros((pos.shape[0], t, len(views), groups.max() + 1, g, g))
    for n in range(pos.shape[0]):
        for f in range(t):
            for j in range(v):
                lo, hi = max(f - 1, 0), min(f + 1, t - 1)
                ok = val[n, f, j] * val[n, lo, j] * val[n, hi, j]
                vel = (pos[n, hi, j] - pos[n, lo, j]) / max(hi - lo, 1) * ok
                cov = config.sigma**2 * np.eye(3)
                speed = np.linalg.norm(vel)
                if not config.isotropic and speed > 0:
                    u = vel / speed
                    cov = cov + (
                        (config.sigma + config.stretch * speed) ** 2 - config.sigma**2
                    ) * np.outer(u, u)
                for k, p in enumerate(views):
                    mu = p @ pos[n, f, j] / config.extent
                    cov2 = p @ cov @ p.T / config.extent**2
                    amp = 1.0
                    if config.separable:  # product of the two marginals, mass-matched
                        amp = np.sqrt(np.linalg.det(cov2) / (cov2[0, 0] * cov2[1, 1]))
                        cov2 = np.diag(np.diag(cov2))
                    inv = np.linalg.inv(cov2)
                    for row in range(g):
                        for col in range(g):
                            dlt = np.array([centres[col], centres[row]]) - mu
                            out[n, f, k, groups[j], row, col] += (
                                amp * val[n, f, j] * np.exp(-0.5 * dlt @ inv @ dlt)
                            )
    return out.reshape(*lead, t, len(views), groups.max() + 1, g, g)
