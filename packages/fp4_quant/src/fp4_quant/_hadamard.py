"""The 16x16 random Hadamard transform (RHT) NVIDIA applies to weight-gradient operands.

H = Sylvester Hadamard / 4 times a random sign diagonal: orthogonal, so applying the same H to
both operands along their shared contraction axis leaves the product unchanged while spreading
block outliers over 16 values.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ._e2m1 import key_seed
from ._types import Array, Float, PRNGKey

RHT_SIZE = 16


def hadamard_matrix(n: int = RHT_SIZE) -> Float[Array, "n n"]:
    """Orthonormal Sylvester Hadamard matrix of size `n` (a power of two)."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"n: expected a power of two, got {n}")
    h = np.ones((1, 1), np.float32)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return jnp.asarray(h / np.sqrt(n), jnp.float32)


def random_hadamard_matrix(*, key: PRNGKey, n: int = RHT_SIZE) -> Float[Array, "n n"]:
    """diag(random signs) @ H: orthogonal, different for each key."""
    seed = key_seed(key)
    seed = jnp.concatenate([seed, seed ^ jnp.uint32(0x2545F491)])
    bits = jax.lax.rng_bit_generator(seed, (n,), dtype=jnp.uint32)[1]
    signs = jnp.where(bits >> 31, -1.0, 1.0).astype(jnp.float32)
    return signs[:, None] * hadamard_matrix(n)


def apply_rht(
    x: Float[Array, "*rest cols"], h: Float[Array, "16 16"]
) -> Float[Array, "*rest cols"]:
    """Apply `h` to every consecutive group of 16 entries along the last axis."""
    n = h.shape[0]
    groups = x.reshape(*x.shape[:-1], x.shape[-1] // n, n)
    return (groups @ h.astype(x.dtype)).reshape(x.shape)
