"""Keys: the public API takes any `jax.random.key` (the default threefry implementation, or a
legacy ``uint32[2]`` key); compiled loops draw from an "rbg" key derived from it once.

Threefry's rounds are unrolled into every loop body that draws random numbers, which made the
engine's compiled generation step about 2.5x slower to compile on CPU than with XLA's own
``RngBitGenerator`` ("rbg"); the numbers drawn per generation are the same in kind (uniforms).
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array


def loop_key(key: Array) -> Array:
    """An "rbg" key derived deterministically from `key` (any implementation)."""
    return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="rbg")
