"""Exact byte accounting of what each device hands to a collective, and the collectives themselves.

Every compressor returns a `CommStats` next to its averaged gradient. The numbers are computed
from the payload arrays that enter `psum` / `all_gather` (size x itemsize), so they are exact for
the code that runs, not estimates. Inside `jax.shard_map` pass the data-parallel `axis_name`; with
`axis_name=None` the collectives are the identity (one worker), which is what single-device tests
and references use.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._types import Array, Int, PyTree, Scalar


class CommStats(NamedTuple):
    """Bytes sent by one device into each kind of collective during one step, and message counts.

    `allreduce_*` counts payloads reduced with `psum` (a ring all-reduce moves each of them twice
    around the ring); `allgather_*` counts payloads every device broadcasts to all others.
    """

    allreduce_bytes: Scalar
    allreduce_messages: Scalar
    allgather_bytes: Scalar
    allgather_messages: Scalar

    @classmethod
    def zeros(cls) -> "CommStats":
        z = jnp.zeros((), jnp.float32)
        return cls(z, z, z, z)

    def __add__(self, other: "CommStats") -> "CommStats":  # type: ignore[override]
        return CommStats(*(a + b for a, b in zip(self, other, strict=True)))

    @property
    def total_bytes(self) -> Scalar:
        return self.allreduce_bytes + self.allgather_bytes


def payload_nbytes(payload: PyTree) -> int:
    """Bytes of a payload pytree: sum of size x itemsize over its leaves (static, exact)."""
    return int(sum(x.size * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(payload)))


def allreduce_stats(nbytes, messages: int | Int[Array, ""] = 1) -> CommStats:
    z = jnp.zeros((), jnp.float32)
    return CommStats(jnp.asarray(nbytes, jnp.float32), jnp.asarray(messages, jnp.float32), z, z)


def allgather_stats(nbytes, messages: int = 1) -> CommStats:
    z = jnp.zeros((), jnp.float32)
    return CommStats(z, z, jnp.asarray(nbytes, jnp.float32), jnp.asarray(messages, jnp.float32))


def axis_size(axis_name: str | None) -> int:
    return 1 if axis_name is None else lax.axis_size(axis_name)


def _pmean_collective(x: PyTree, axis_name: str) -> PyTree:
    """Every all-reduce this package issues goes through here (tests wrap it to check bytes)."""
    return lax.pmean(x, axis_name)


def _all_gather_collective(x: PyTree, axis_name: str) -> PyTree:
    """Every all-gather this package issues goes through here (tests wrap it to check bytes)."""
    return lax.all_gather(x, axis_name)


def pmean(x: PyTree, axis_name: str | None) -> PyTree:
    """Mean over the data-parallel axis (identity on one worker)."""
    if axis_name is None:
        return x
    return _pmean_collective(x, axis_name)


def psum(x: PyTree, axis_name: str | None) -> PyTree:
    if axis_name is None:
        return x
    return lax.psum(x, axis_name)


def all_gather(x: PyTree, axis_name: str | None) -> PyTree:
    """Stack every worker's payload along a new leading axis (a length-1 axis on one worker)."""
    if axis_name is None:
        return jax.tree.map(lambda a: a[None], x)
    return _all_gather_collective(x, axis_name)


def fold_in_device(key, axis_name: str | None):
    """A key that differs per device (for private randomness such as stochastic rounding)."""
    if axis_name is None:
        return key
    return jax.random.fold_in(key, lax.axis_index(axis_name))


def pmean_bucket(arrays: list[jax.Array], axis_name: str | None) -> list[jax.Array]:
    """Mean of several arrays with ONE collective: flatten, concatenate, pmean, split back.

    This is DDP's gradient bucketing / the PowerSGD hook's batched P and Q all-reduce; it
    changes the message count (latency term), never the bytes.
    """
    if axis_name is None or not arrays:
        return list(arrays)
    dtype = jnp.result_type(*arrays)
    flat = jnp.concatenate([a.reshape(-1).astype(dtype) for a in arrays])
    flat = _pmean_collective(flat, axis_name)
    out, offset = [], 0
    for a in arrays:
        out.append(flat[offset : offset + a.size].reshape(a.shape).astype(a.dtype))
        offset += a.size
    return out
