"""The compressor interface: an optax-like `(init, update)` pair of pure functions.

    state = comp.init(params)
    mean_grads, state, stats = comp.update(grads, state, key=key, axis_name="dp")

`update` takes this device's gradient, compresses it (with error feedback where enabled), runs
the collective on the *compressed payload* over `axis_name` (inside `jax.shard_map`), and returns
the decompressed data-parallel mean, the new per-device state and the exact `CommStats`.
With `axis_name=None` it is the single-worker round trip (compress -> decompress).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._types import PyTree


class Compressor(NamedTuple):
    """A gradient compressor with explicit state; hyperparameters live in the closure."""

    init: Callable[[PyTree], Any]
    update: Callable[..., tuple[PyTree, Any, Any]]


def check_float_tree(tree: PyTree, name: str) -> list[jax.Array]:
    """Host-side validation: a non-empty pytree of floating arrays."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{name}: expected a non-empty pytree of arrays, got {tree!r}")
    for i, x in enumerate(leaves):
        if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(
                f"{name}: expected floating-point arrays, leaf {i} has "
                f"{getattr(x, 'dtype', type(x).__name__)}"
            )
    return leaves


def check_same_structure(grads: PyTree, shapes: tuple[tuple[int, ...], ...], name: str) -> list:
    leaves, _ = jax.tree.flatten(grads)
    got = tuple(tuple(x.shape) for x in leaves)
    if got != shapes:
        raise ValueError(
            f"{name}: expected leaves with shapes {shapes} (those given to init), got {got}"
        )
    return leaves


def check_key(key, needed: bool, name: str = "key") -> None:
    if needed and key is None:
        raise ValueError(f"{name}: this compressor is randomised; pass key=jax.random.key(...)")


def check_all_finite(tree: PyTree, name: str) -> None:
    """Host-side NaN/inf check for concrete inputs (skipped for tracers)."""
    for i, x in enumerate(jax.tree.leaves(tree)):
        if isinstance(x, jax.core.Tracer):
            return
        if not bool(jnp.all(jnp.isfinite(x))):
            raise ValueError(f"{name}: leaf {i} contains NaN or inf")
