"""Ray backend: every model node runs as a group of Ray actors, so workflows scale past one
machine with the same DAGs and the same submit/result API as the embedded runtime.

`ray_runtime(catalog, replicas={"denoiser": 2})` starts one actor group per served model
(`replicas[m]` actors, default 1); each actor holds one `NodeExecutor` (jitted, bucketed) of
its model. The scheduler stays in the driver: a `ServingRuntime` in micro mode whose per-model
queues, cross-workflow batching, priorities and admission are unchanged, and whose executors
are the actor groups (`ActorGroup.run` sends a batch to a free replica and waits for it). A
model's concurrency cap is its actor count, so a free actor is always there when a batch is
dispatched. An actor that raises, or dies, fails every request of its batch explicitly.

Batches travel through Ray's object store (zero-copy reads of numpy arrays on the same node).
Ray is an optional extra: `pip install diffusion-serve-jax[ray]`; it is imported lazily.
"""

import queue
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._executor import NodeExecutor
from ._runtime import ServingRuntime
from ._workflow import Catalog, ModelSpec


class NodeActor:
    """The body of one Ray actor: one model's jitted, bucketed executor."""

    def __init__(self, spec: ModelSpec, buckets: tuple[int, ...]):
        self.executor = NodeExecutor(spec, buckets=buckets)

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.executor.run(batch)

    def traces(self) -> int:
        return self.executor.traces


def _ray():
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Ray backend needs ray: pip install 'diffusion-serve-jax[ray]'"
        ) from e
    if not ray.is_initialized():
        raise RuntimeError("ray is not initialised: call ray.init(...) before ray_runtime")
    return ray


class ActorGroup:
    """Replicas of one model as Ray actors; quacks like a `NodeExecutor` for the runtime."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        replicas: int = 1,
        buckets: tuple[int, ...] = (1, 2, 4, 8, 16),
        num_cpus: float = 1.0,
        timeout_s: float | None = 600.0,
    ):
        if replicas < 1:
            raise ValueError(f"replicas: expected >= 1 actor for {spec.name!r}, got {replicas}")
        ray = _ray()
        self.spec = spec
        self.buckets = tuple(sorted(set(int(b) for b in buckets)))
        self.timeout_s = timeout_s
        cls = ray.remote(num_cpus=num_cpus, max_restarts=0)(NodeActor)
        spec_ref = ray.put(spec)
        self.actors = [
            cls.options(name=None).remote(spec_ref, self.buckets) for _ in range(replicas)
        ]
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for a in self.actors:
            self._free.put(a)

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run `batch` on a free replica (blocking; the runtime calls it from a worker thread).
        Raises the actor's error (`RayTaskError`) or `RayActorError` if the actor died."""
        ray = _ray()
        actor = self._free.get()
        try:
            return ray.get(actor.run.remote(batch), timeout=self.timeout_s)
        finally:
            self._free.put(actor)

    def warm_up(self) -> None:
        """Compile every bucket on every replica (before serving, so latency is steady)."""
        ray = _ray()
        refs = [
            a.run.remote({k: np.zeros((b, *s.shape), s.dtype) for k, s in self.spec.inputs.items()})
            for a in self.actors
            for b in self.buckets
        ]
        ray.get(refs, timeout=self.timeout_s)

    def shutdown(self) -> None:
        ray = _ray()
        for a in self.actors:
            ray.kill(a)


def ray_runtime(
    catalog: Catalog,
    *,
    replicas: Mapping[str, int] | None = None,
    buckets: tuple[int, ...] = (1, 2, 4, 8, 16),
    num_cpus_per_actor: float = 1.0,
    warm_up: bool = False,
    **runtime_kwargs: Any,
) -> ServingRuntime:
    """A micro-serving `ServingRuntime` whose model nodes run as Ray actor groups.

    `replicas[m]` actors serve model `m` (default 1). The runtime's `submit`, request
    futures, HTTP server (`serve`) and metrics are those of the embedded runtime. Call
    `shutdown_actors(runtime)` when done (after `await runtime.stop()`).
    """
    if runtime_kwargs.get("mode", "micro") != "micro":
        raise ValueError(f"mode: the Ray backend serves micro mode, got {runtime_kwargs['mode']!r}")
    for k in ("executors", "inline_below_s", "num_workers"):
        if k in runtime_kwargs:
            raise ValueError(f"{k}: set by the Ray backend (one dispatch thread per actor)")
    used = sorted({n.model for w in catalog.workflows.values() for n in w.workflow.nodes})
    replicas = dict(replicas or {})
    unknown = sorted(set(replicas) - set(used))
    if unknown:
        raise ValueError(f"replicas: unknown models {unknown}; served models are {used}")
    counts = {m: int(replicas.get(m, 1)) for m in used}
    groups = {
        m: ActorGroup(catalog.models[m], replicas=n, buckets=buckets, num_cpus=num_cpus_per_actor)
        for m, n in counts.items()
    }
    if warm_up:
        for g in groups.values():
            g.warm_up()
    return ServingRuntime(
        catalog,
        mode="micro",
        num_workers=sum(counts.values()),  # one dispatch thread per actor
        replicas=counts,
        executors=groups,
        inline_below_s=0.0,  # never block the event loop on a remote call
        buckets=buckets,
        **runtime_kwargs,
    )


def shutdown_actors(runtime: ServingRuntime) -> None:
    """Kill the actor groups of a runtime made by `ray_runtime`."""
    for ex in runtime.executors.values():
        if isinstance(ex, ActorGroup):
            ex.shutdown()
