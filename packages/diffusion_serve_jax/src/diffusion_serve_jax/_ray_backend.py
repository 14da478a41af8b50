"""Ray backend: every model node runs as a group of Ray actors, so workflows scale past one
machine with the same DAGs and the same submit/result API as the embedded runtime.

`ray_runtime(catalog, replicas={"denoiser": 2})` starts one actor group per served model
(`replicas[m]` actors, default 1); each actor holds one `NodeExecutor` (jitted, bucketed) of
its model. The scheduler stays in the driver: a `ServingRuntime` in micro mode whose per-model
queues, cross-workflow batching, priorities and admission are unchanged, and whose executors
are the actor groups (`ActorGroup.run` sends a batch to a free replica and waits for it). A
model's concurrency cap is its actor count, so a free actor is always there when a batch is
dispatched. An actor that raises, or dies, fails every request of its batch explicitly.

With `autoscale=autoscaler(...)` the runtime's per-model replica counts follow the load
(`_autoscale`) and each group grows and shrinks with them (`ActorGroup.resize`: new actors
start at once; a stopping actor finishes the batch it is running before it is killed, so no
accepted request is dropped). A group keeps at least one actor (a cold one imports JAX and
compiles: seconds); `max_actors` bounds the actors of all groups together.

Batches travel through Ray's object store (zero-copy reads of numpy arrays on the same node).
Ray is an optional extra: `pip install diffusion-serve-jax[ray]`; it is imported lazily.
"""

import queue
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from ._autoscale import Autoscaler
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

    def ready(self, warm: bool) -> int:
        """Returns once the actor is up; with `warm`, after compiling every bucket."""
        if warm:
            spec = self.executor.spec
            for b in self.executor.buckets:
                self.run({k: np.zeros((b, *s.shape), s.dtype) for k, s in spec.inputs.items()})
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
        warm: bool = False,
    ):
        """`warm`: actors that `resize` starts later compile every bucket before they take
        a batch (the first `replicas` actors: call `warm_up`)."""
        if replicas < 1:
            raise ValueError(f"replicas: expected >= 1 actor for {spec.name!r}, got {replicas}")
        ray = _ray()
        self.spec = spec
        self.buckets = tuple(sorted(set(int(b) for b in buckets)))
        self.timeout_s = timeout_s
        self._cls = ray.remote(num_cpus=num_cpus, max_restarts=0)(NodeActor)
        self._spec_ref = ray.put(spec)
        self._lock = threading.Lock()
        self._pending: dict = {}  # ready() reference -> actor still starting
        self._retire = 0  # busy actors to stop when their batch is done
        self.actors: list = []
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self.started = self.stopped = 0
        self._warm = None  # the first actors take batches at once (Ray queues them)
        self.resize(replicas)
        self._warm = warm

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run `batch` on a free replica (blocking; the runtime calls it from a worker thread).
        Raises the actor's error (`RayTaskError`) or `RayActorError` if the actor died."""
        ray = _ray()
        actor = self._take()
        try:
            return ray.get(actor.run.remote(batch), timeout=self.timeout_s)
        finally:
            self._release(actor)

    def _take(self):
        """A free actor; actors still starting join the free ones once they are up."""
        while True:
            self._admit_started()
            try:
                return self._free.get(timeout=0.02)
            except queue.Empty:
                continue

    def _admit_started(self) -> None:
        with self._lock:
            if not self._pending:
                return
            refs = list(self._pending)
            up, _ = _ray().wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
            for ref in up:  # a failed start joins too: its first batch fails explicitly
                self._free.put(self._pending.pop(ref))

    def _release(self, actor) -> None:
        with self._lock:
            if self._retire > 0:  # the group shrank while this actor worked: stop it now
                self._retire -= 1
                self._stop(actor)
                return
        self._free.put(actor)

    def _stop(self, actor) -> None:
        self.actors.remove(actor)
        self.stopped += 1
        _ray().kill(actor, no_restart=True)

    def resize(self, replicas: int) -> None:
        """Grow to (start actors) or shrink to `replicas` actors. Shrinking stops actors
        still starting first, then idle ones, then busy ones after the batch they are
        running (`run` stops them when it returns)."""
        if replicas < 1:
            raise ValueError(
                f"replicas: expected >= 1 actor for {self.spec.name!r}, got {replicas}"
            )
        with self._lock:
            live = len(self.actors) - self._retire
            if replicas > live:
                back = min(self._retire, replicas - live)  # cancel pending stops first
                self._retire -= back
                for _ in range(replicas - live - back):
                    actor = self._cls.options(name=None).remote(self._spec_ref, self.buckets)
                    self.actors.append(actor)
                    self.started += 1
                    if self._warm is None:  # the first actors: Ray queues their batches
                        self._free.put(actor)
                    else:  # later ones join when up (and warm: every bucket compiled)
                        self._pending[actor.ready.remote(self._warm)] = actor
                return
            for _ in range(live - replicas):
                if self._pending:
                    self._stop(self._pending.pop(next(iter(self._pending))))
                    continue
                try:
                    self._stop(self._free.get_nowait())
                except queue.Empty:
                    self._retire += 1

    def warm_up(self) -> None:
        """Compile every bucket on every replica (before serving, so latency is steady)."""
        ray = _ray()
        refs = [
            a.run.remote({k: np.zeros((b, *s.shape), s.dtype) for k, s in self.spec.inputs.items()})
            for a in self.actors
            for b in self.buckets
        ]
        ray.get(refs, timeout=self.timeout_s)

    @property
    def size(self) -> int:
        """Actors serving now (busy ones that will stop after their batch not counted)."""
        with self._lock:
            return len(self.actors) - self._retire

    def shutdown(self) -> None:
        ray = _ray()
        with self._lock:
            for a in self.actors:
                ray.kill(a)
            self.actors.clear()
            self._pending.clear()
            self._retire = 0


def ray_runtime(
    catalog: Catalog,
    *,
    replicas: Mapping[str, int] | None = None,
    buckets: tuple[int, ...] = (1, 2, 4, 8, 16),
    num_cpus_per_actor: float = 1.0,
    warm_up: bool = False,
    autoscale: Autoscaler | None = None,
    max_actors: int | None = None,
    **runtime_kwargs: Any,
) -> ServingRuntime:
    """A micro-serving `ServingRuntime` whose model nodes run as Ray actor groups.

    `replicas[m]` actors serve model `m` (default 1). With `autoscale`, each group starts
    at `max(min_replicas, 1)` actors and follows the policy's replica count, all groups
    together holding at most `max_actors` busy actors (default: `max_replicas` per model).
    The runtime's `submit`, request futures, HTTP server (`serve`) and metrics are those of
    the embedded runtime. Call `shutdown_actors(runtime)` when done (after `await
    runtime.stop()`).
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
    if autoscale is not None and replicas:
        raise ValueError("replicas: fixed actor counts and autoscale exclude each other")
    if autoscale is None:
        counts = {m: int(replicas.get(m, 1)) for m in used}
        workers = sum(counts.values())
    else:
        counts = dict.fromkeys(used, max(autoscale.min_replicas, 1))
        workers = len(used) * autoscale.max_replicas if max_actors is None else int(max_actors)
        autoscale.init(used, workers, 0.0)  # checks max_actors before any actor starts
    if autoscale is None and max_actors is not None:
        raise ValueError("max_actors: only with autoscale (else the replicas fix the actors)")
    groups = {
        m: ActorGroup(
            catalog.models[m],
            replicas=n,
            buckets=buckets,
            num_cpus=num_cpus_per_actor,
            warm=warm_up,
        )
        for m, n in counts.items()
    }
    if warm_up:
        for g in groups.values():
            g.warm_up()
    return ServingRuntime(
        catalog,
        mode="micro",
        num_workers=workers,  # one dispatch thread per busy actor
        replicas=None if autoscale is not None else counts,
        autoscale=autoscale,
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
