"""Node executors: one jitted function per model, batch sizes bucketed so JAX compiles once.

A batch of n requests runs at the smallest bucket >= n (rows padded by repeating the last
one, results sliced back to n); batches above the largest bucket run in chunks. With a
`mesh`, the batch axis is sharded over the mesh's devices (one request batch spread over
several devices); with `shard_batch=False` the inputs and parameters are replicated on the
mesh and the model shards itself (e.g. `sequence_parallel_specs`: one image's tokens split
over the devices).
"""

import copy
import time
from collections.abc import Sequence
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from ._workflow import ModelSpec


class Executor(Protocol):
    """What the runtime needs of a model's executor: a `NodeExecutor`, or anything shaped like
    one (the Ray backend's `ActorGroup`)."""

    spec: Any
    buckets: tuple[int, ...]

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def pick_bucket(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding `n` rows (the largest bucket if none does)."""
    if n < 1:
        raise ValueError(f"n: expected a batch of at least 1 row, got {n}")
    for b in buckets:
        if b >= n:
            return b
    return buckets[-1]


class NodeExecutor:
    """Runs one model on host batches; `traces` counts compilations (one per bucket)."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        buckets: Sequence[int] = (1, 2, 4, 8, 16),
        mesh: Mesh | None = None,
        shard_batch: bool = True,
    ):
        buckets = tuple(sorted(set(int(b) for b in buckets)))
        if not buckets or buckets[0] < 1:
            raise ValueError(f"buckets: expected positive batch sizes, got {buckets}")
        if mesh is not None and shard_batch:
            n_dev = mesh.devices.size
            bad = [b for b in buckets if b % n_dev]
            if bad:
                raise ValueError(
                    f"buckets: with a {n_dev}-device mesh every bucket must be a "
                    f"multiple of {n_dev}, got {bad}"
                )
        self.spec, self.buckets, self.mesh = spec, buckets, mesh
        self.traces = 0

        def counted(params, inputs):
            self.traces += 1
            return spec.fn(params, inputs)

        if mesh is None:
            # parameters committed to one device, so that weights loaded later (a checkpoint
            # restore returns committed arrays) hit the same compiled function: jit's cache
            # tells committed from uncommitted arguments and would compile the model again
            leaf = next(iter(jax.tree.leaves(spec.params)), None)
            device = next(iter(leaf.devices())) if isinstance(leaf, jax.Array) else None
            rep = SingleDeviceSharding(device or jax.devices()[0])
            self._fn = jax.jit(counted)
        else:
            rep = NamedSharding(mesh, P())
            shard = NamedSharding(mesh, P(mesh.axis_names[0])) if shard_batch else rep
            self._fn = jax.jit(counted, in_shardings=(rep, shard), out_shardings=shard)
        self._rep = rep
        self._params = jax.device_put(spec.params, rep)

    def set_params(self, params) -> None:
        """Serve freshly loaded weights (same tree and shapes: no recompilation, whether the
        arrays come committed to a device, as from a checkpoint restore, or not)."""
        if jax.tree.structure(params) != jax.tree.structure(self._params):
            raise ValueError(f"params: expected the tree of model {self.spec.name!r}")
        self._params = jax.device_put(params, self._rep)

    def replica(self) -> "NodeExecutor":
        """Another executor of the same model with its own parameters (a second copy of the
        weights, e.g. one per monolithic replica) sharing this one's compiled functions."""
        return copy.copy(self)

    def _call(self, batch: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        b = pick_bucket(n, self.buckets)
        if b != n:
            batch = {
                k: np.concatenate([v, np.repeat(v[-1:], b - n, axis=0)]) for k, v in batch.items()
            }
        out = jax.block_until_ready(self._fn(self._params, batch))
        return {k: np.asarray(v)[:n] for k, v in out.items()}

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on a batch of host arrays (every input, batch axis first)."""
        missing = sorted(set(self.spec.inputs) - set(batch))
        if missing:
            raise ValueError(f"batch: model {self.spec.name!r} is missing inputs {missing}")
        sizes = {v.shape[0] for v in batch.values()}
        if len(sizes) != 1:
            raise ValueError(f"batch: inputs disagree on the batch size: {sorted(sizes)}")
        n = sizes.pop()
        top = self.buckets[-1]
        if n <= top:
            return self._call(batch, n)
        parts = [
            self._call({k: v[i : i + top] for k, v in batch.items()}, min(top, n - i))
            for i in range(0, n, top)
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def example_batch(self, n: int) -> dict[str, np.ndarray]:
        return {k: np.zeros((n, *s.shape), s.dtype) for k, s in self.spec.inputs.items()}

    def profile(self, *, repeats: int = 3) -> dict[int, float]:
        """Compile every bucket, then the median seconds per batch at each bucket size."""
        prof = {}
        for b in self.buckets:
            batch = self.example_batch(b)
            self.run(batch)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                self.run(batch)
                ts.append(time.perf_counter() - t0)
            prof[b] = float(np.median(ts))
        return prof


def stack_rows(refs: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Assemble a batch from per-request `(array, row)` references, copying only when needed.

    When the references are rows 0..n-1, in order, of one n-row array (the previous node's
    batch output for the same group of requests) that array itself is returned: the data
    plane passes it on with no copy.
    """
    base = refs[0][0]
    if base.shape[0] == len(refs) and all(a is base and r == i for i, (a, r) in enumerate(refs)):
        return base
    return np.stack([a[r] for a, r in refs])
