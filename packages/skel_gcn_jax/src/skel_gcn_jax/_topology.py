"""Probabilistic topology: Bhattacharyya distances between joint Gaussians -> prior adjacency.

For Gaussians N(mu1, S1), N(mu2, S2) with S = (S1 + S2) / 2 the Bhattacharyya distance is

    D_B = 1/8 (mu1 - mu2)^T S^-1 (mu1 - mu2) + 1/2 ln(det S / sqrt(det S1 det S2)),

and exp(-D_B) is the Bhattacharyya coefficient, the overlap of the two densities in [0, 1]. Joints
whose (velocity-shaped) Gaussians overlap get a strong prior edge, whether or not a bone joins
them. The prior is mixed with the physical graph. 3x3 determinants and inverses are written in
closed form (cofactors): batched `linalg` calls on 3x3 blocks are slow on CPU, and the closed form
is differentiable; `bhattacharyya_distance_reference` uses `jnp.linalg` as the test oracle.
"""

import jax
import jax.numpy as jnp

from ._graph import normalize_adjacency


def _det3(m: jax.Array) -> jax.Array:
    return (
        m[..., 0, 0] * (m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 1])
        - m[..., 0, 1] * (m[..., 1, 0] * m[..., 2, 2] - m[..., 1, 2] * m[..., 2, 0])
        + m[..., 0, 2] * (m[..., 1, 0] * m[..., 2, 1] - m[..., 1, 1] * m[..., 2, 0])
    )


def _quad_inv3(m: jax.Array, d: jax.Array) -> jax.Array:
    """`d^T m^-1 d` for symmetric 3x3 `m` via the adjugate."""
    c00 = m[..., 1, 1] * m[..., 2, 2] - m[..., 1, 2] ** 2
    c11 = m[..., 0, 0] * m[..., 2, 2] - m[..., 0, 2] ** 2
    c22 = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] ** 2
    c01 = m[..., 0, 2] * m[..., 1, 2] - m[..., 0, 1] * m[..., 2, 2]
    c02 = m[..., 0, 1] * m[..., 1, 2] - m[..., 0, 2] * m[..., 1, 1]
    c12 = m[..., 0, 1] * m[..., 0, 2] - m[..., 0, 0] * m[..., 1, 2]
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    num = c00 * x * x + c11 * y * y + c22 * z * z + 2.0 * (c01 * x * y + c02 * x * z + c12 * y * z)
    return num / _det3(m)


def bhattacharyya_distance(
    mean1: jax.Array, cov1: jax.Array, mean2: jax.Array, cov2: jax.Array
) -> jax.Array:
    """Bhattacharyya distance between 3-D Gaussians (broadcast over leading axes)."""
    s = 0.5 * (cov1 + cov2)
    maha = _quad_inv3(s, mean1 - mean2)
    logdet = jnp.log(_det3(s)) - 0.5 * (jnp.log(_det3(cov1)) + jnp.log(_det3(cov2)))
    return 0.125 * maha + 0.5 * logdet


def bhattacharyya_distance_reference(mean1, cov1, mean2, cov2):
    """`jnp.linalg` version of `bhattacharyya_distance` (oracle; any dimension)."""
    s = 0.5 * (cov1 + cov2)
    d = mean1 - mean2
    maha = jnp.einsum("...i,...i->...", d, jnp.linalg.solve(s, d[..., None])[..., 0])
    ld = lambda m: jnp.linalg.slogdet(m)[1]  # noqa: E731
    return 0.125 * maha + 0.5 * (ld(s) - 0.5 * (ld(cov1) + ld(cov2)))


def bhattacharyya_adjacency(
    mean: jax.Array, cov: jax.Array, *, temperature: float = 1.0
) -> jax.Array:
    """Pairwise `exp(-D_B / temperature)` `(..., V, V)` for joint Gaussians.

    `mean` is `(..., V, 3)` and `cov` `(..., V, 3, 3)`.

    Symmetric, 1 on the diagonal, in (0, 1].
    """
    if mean.shape[-1] != 3 or cov.shape[-2:] != (3, 3) or cov.shape[:-1] != mean.shape:
        raise ValueError(
            f"mean, cov: expected (..., V, 3) and (..., V, 3, 3), got {mean.shape}, {cov.shape}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    dist = bhattacharyya_distance(
        mean[..., :, None, :],
        cov[..., :, None, :, :],
        mean[..., None, :, :],
        cov[..., None, :, :, :],
    )
    return jnp.exp(-jnp.maximum(dist, 0.0) / temperature)


def joint_gaussians(
    positions: jax.Array, valid: jax.Array | None = None, *, min_var: float = 1e-4
) -> tuple[jax.Array, jax.Array]:
    """Temporal statistics of each joint: mean `(..., V, 3)` and covariance `(..., V, 3, 3)`
    of its observed positions over time (`positions` `(..., T, V, 3)`, `valid` `(..., T, V)`)."""
    if valid is None:
        valid = jnp.ones(positions.shape[:-1], positions.dtype)
    w = valid[..., None]
    count = jnp.maximum(jnp.sum(w, axis=-3), 1.0)
    mean = jnp.sum(positions * w, axis=-3) / count
    d = (positions - mean[..., None, :, :]) * w
    cov = jnp.einsum("...tvi,...tvj->...vij", d, d) / count[..., None]
    eye = jnp.eye(3, dtype=positions.dtype).reshape((1,) * (cov.ndim - 2) + (3, 3))
    return mean, cov + min_var * eye


def mix_adjacency(physical: jax.Array, prior: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """`alpha * physical + (1 - alpha) * prior`, both row-normalised so rows sum to 1."""
    return alpha * normalize_adjacency(physical, mode="row") + (1.0 - alpha) * normalize_adjacency(
        prior, mode="row"
    )
