"""The rank-error model: Eckart-Young error curves and how entropy moves the rank.

- Eckart-Young: the best rank-r approximation of M leaves the relative squared error
  e(r) = sum_{i > r} s_i^2 / sum_i s_i^2 (the discarded singular values).
- When the spectrum is not computed, the curve of an n x m matrix with i.i.d. entries is
  estimated from the Marchenko-Pastur law (`mp_error_curve`) or by Monte Carlo (`mc_error_curve`).
- Entropy -> rank: for i.i.d. entries of variance v the differential entropy is
  h = 1/2 log2(2 pi e v), so the absolute rank-r error is E(r) = n m v e(r) = n m 2^{2h} e(r) /
  (2 pi e). Holding E(r) constant while the (fixed-bin) entropy moves from H0 to H gives
  e(r) = e(r0) * 2^{2 (H0 - H)}: lower entropy tolerates a larger relative error, i.e. a smaller
  rank (`rank_for_entropy`).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from ._types import Curve, Key, Matrix, Scalar, Spectrum


def eckart_young_curve(singular_values: Spectrum) -> Spectrum:
    """e(r) for r = 1..k from singular values (any order): sum of discarded s_i^2 / total."""
    s2 = jnp.sort(jnp.asarray(singular_values) ** 2)[::-1]
    total = jnp.sum(s2)
    return jnp.maximum(1.0 - jnp.cumsum(s2) / jnp.where(total > 0, total, 1.0), 0.0)


def eckart_young_error(m: Matrix, rank: int) -> Scalar:
    """Relative squared error of the best rank-`rank` approximation of `m`."""
    s = jnp.linalg.svd(m, compute_uv=False)
    if not 1 <= rank <= s.shape[0]:
        raise ValueError(f"rank: expected an int in [1, {s.shape[0]}], got {rank!r}")
    return eckart_young_curve(s)[rank - 1]


def rank_for_error(singular_values: Spectrum, tolerance: float) -> jax.Array:
    """Smallest rank whose Eckart-Young relative error is <= `tolerance`."""
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance: expected a number in [0, 1), got {tolerance!r}")
    curve = eckart_young_curve(singular_values)
    return jnp.argmax(curve <= tolerance + 1e-7).astype(jnp.int32) + 1


def _check_shape(n: int, m: int, max_rank: int) -> None:
    for name, v in (("n", n), ("m", m), ("max_rank", max_rank)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if max_rank > min(n, m):
        raise ValueError(f"max_rank: expected <= min(n, m) = {min(n, m)}, got {max_rank}")


def mp_error_curve(n: int, m: int, max_rank: int, *, grid: int = 20001) -> np.ndarray:
    """Marchenko-Pastur estimate of e(r), r = 1..max_rank, for an n x m i.i.d. matrix.

    With p = min(n, m), q = max(n, m), lam = p / q, the eigenvalues of X X^T / q follow MP on
    [(1 - sqrt lam)^2, (1 + sqrt lam)^2] with mean 1; the top r of p carry the energy of the upper
    r/p quantile, so e(r) = 1 - integral of x f(x) over that quantile.
    """
    _check_shape(n, m, max_rank)
    p, q = min(n, m), max(n, m)
    lam = p / q
    a, b = (1 - math.sqrt(lam)) ** 2, (1 + math.sqrt(lam)) ** 2
    theta = np.linspace(0.0, np.pi, grid)
    x = a + (b - a) * (1 - np.cos(theta)) / 2
    # f(x) dx with x = a + (b-a)(1-cos t)/2: ((b-a)/2)^2 sin^2 t / (2 pi lam x) dt (finite at a=0).
    with np.errstate(divide="ignore", invalid="ignore"):
        dens = ((b - a) / 2) ** 2 * np.sin(theta) ** 2 / (2 * np.pi * lam * x)
    dens[0] = b / (2 * np.pi * lam) if a == 0 else 0.0  # limit t -> 0 (x -> 0 when lam = 1)
    dt = theta[1] - theta[0]

    def upper_integral(w):  # cumulative integral from the top edge b down to each grid point
        mid = (w[1:] + w[:-1]) / 2 * dt
        return np.concatenate([np.cumsum(mid[::-1])[::-1], [0.0]])

    mass = upper_integral(dens)
    energy = upper_integral(dens * x)
    mass, energy = mass / mass[0], energy / energy[0]
    ranks = np.arange(1, max_rank + 1)
    # mass decreases along the grid; interpolate energy at mass = r / p
    captured = np.interp(ranks / p, mass[::-1], energy[::-1])
    return np.clip(1.0 - captured, 0.0, 1.0)


def mc_error_curve(n: int, m: int, max_rank: int, *, key: Key, samples: int = 8) -> Curve:
    """Monte Carlo estimate of e(r), r = 1..max_rank: mean Eckart-Young curve of Gaussian draws."""
    _check_shape(n, m, max_rank)
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: expected a positive int, got {samples!r}")
    draws = jax.random.normal(key, (samples, n, m))
    s = jnp.linalg.svd(draws, compute_uv=False)
    return jnp.mean(jax.vmap(eckart_young_curve)(s), axis=0)[:max_rank]


def rank_for_entropy(curve: Curve, ref_rank, ref_bits, bits, *, min_rank: int = 1) -> jax.Array:
    """Smallest rank r >= min_rank with e(r) <= e(ref_rank) * 2^{2 (ref_bits - bits)}.

    Holds the absolute Eckart-Young error of the reference (rank `ref_rank` at entropy
    `ref_bits`) constant at entropy `bits`; returns len(curve) if no rank is small enough.
    """
    curve = jnp.asarray(curve)
    log_target = jnp.log2(curve[ref_rank - 1]) + 2.0 * (ref_bits - bits)
    ok = jnp.log2(jnp.maximum(curve, 1e-30)) <= log_target + 1e-6
    ok = ok & (jnp.arange(1, curve.shape[0] + 1) >= min_rank)
    return jnp.where(jnp.any(ok), jnp.argmax(ok) + 1, curve.shape[0]).astype(jnp.int32)
