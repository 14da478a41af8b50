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

`ray_runtime(catalog, mode="monolithic")` is the baseline on the same backend: one actor
group per workflow, each actor holding that whole workflow (its own copy of every model it
uses: `WorkflowActor`) and running its DAG for a batch of the workflow's requests; the
driver's runtime batches per workflow (`replicas` / `autoscale` then count workflow
replicas).

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
from ._workflow import Catalog, CompiledWorkflow, ModelSpec


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


def run_workflow_batch(
    cw: CompiledWorkflow, executors: Mapping[str, Any], inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run workflow `cw`'s whole DAG on a batch (`inputs` keyed `input.<name>`, batch axis
    first) with `executors[model].run`; returns each workflow output's source
    (`node.output`) for the batch."""
    values = dict(inputs)
    for name in cw.order:
        node = cw.node(name)
        outs = executors[node.model].run({a: values[src] for a, src in node.inputs.items()})
        for k, arr in outs.items():
            values[f"{name}.{k}"] = arr
    return {src: values[src] for src in cw.workflow.outputs.values()}


class WorkflowActor:
    """The body of one monolithic Ray actor: a whole workflow, with its own executor (its
    own copy of the parameters) of every model it uses."""

    def __init__(self, cw: CompiledWorkflow, specs: Mapping[str, ModelSpec], buckets):
        self.workflow = cw
        self.executors = {m: NodeExecutor(s, buckets=buckets) for m, s in specs.items()}

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_workflow_batch(self.workflow, self.executors, batch)

    def ready(self, warm: bool) -> int:
        """Returns once the actor is up; with `warm`, after compiling every bucket."""
        inputs = self.workflow.workflow.inputs
        buckets = sorted(set.intersection(*(set(e.buckets) for e in self.executors.values())))
        for b in buckets if warm else ():
            self.run({f"input.{k}": np.zeros((b, *s.shape), s.dtype) for k, s in inputs.items()})
        return sum(e.traces for e in self.executors.values())


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
        spec: ModelSpec | CompiledWorkflow,
        *,
        replicas: int = 1,
        buckets: tuple[int, ...] = (1, 2, 4, 8, 16),
        num_cpus: float = 1.0,
        timeout_s: float | None = 600.0,
        warm: bool = False,
        models: Mapping[str, ModelSpec] | None = None,
    ):
        """`warm`: actors that `resize` starts later compile every bucket before they take
        a batch (the first `replicas` actors: call `warm_up`). `spec` a `CompiledWorkflow`
        with the catalog's `models`: every actor holds that whole workflow (`WorkflowActor`,
        monolithic serving; batches are keyed `input.<name>`)."""
        if replicas < 1:
            raise ValueError(f"replicas: expected >= 1 actor for {spec.name!r}, got {replicas}")
        ray = _ray()
        self.spec = spec
        self.buckets = tuple(sorted(set(int(b) for b in buckets)))
        self.timeout_s = timeout_s
        if isinstance(spec, CompiledWorkflow):
            if models is None:
                raise ValueError(f"models: a workflow group ({spec.name!r}) needs the model specs")
            used = sorted({n.model for n in spec.workflow.nodes})
            body, args = WorkflowActor, (spec, {m: models[m] for m in used})
            self._inputs = {f"input.{k}": s for k, s in spec.workflow.inputs.items()}
        else:
            body, args = NodeActor, (spec,)
            self._inputs = dict(spec.inputs)
        self._cls = ray.remote(num_cpus=num_cpus, max_restarts=0)(body)
        self._args = [ray.put(a) for a in args]
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
                    actor = self._cls.options(name=None).remote(*self._args, self.buckets)
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
            a.run.remote({k: np.zeros((b, *s.shape), s.dtype) for k, s in self._inputs.items()})
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
    mode: str = "micro",
    replicas: Mapping[str, int] | None = None,
    buckets: tuple[int, ...] = (1, 2, 4, 8, 16),
    num_cpus_per_actor: float = 1.0,
    warm_up: bool = False,
    autoscale: Autoscaler | None = None,
    max_actors: int | None = None,
    **runtime_kwargs: Any,
) -> ServingRuntime:
    """A `ServingRuntime` whose model nodes (`mode="micro"`) or whole workflows
    (`mode="monolithic"`) run as Ray actor groups.

    `replicas[k]` actors serve model (or workflow) `k` (default 1). With `autoscale`, each
    group starts at `max(min_replicas, 1)` actors and follows the policy's replica count,
    all groups together holding at most `max_actors` busy actors (default: `max_replicas`
    per group). The runtime's `submit`, request futures, HTTP server (`serve`) and metrics
    are those of the embedded runtime. Call `shutdown_actors(runtime)` when done (after
    `await runtime.stop()`).
    """
    if mode not in ("micro", "monolithic"):
        raise ValueError(f"mode: expected 'micro' or 'monolithic', got {mode!r}")
    for k in ("executors", "inline_below_s", "num_workers", "workflow_executors"):
        if k in runtime_kwargs:
            raise ValueError(f"{k}: set by the Ray backend (one dispatch thread per actor)")
    if mode == "micro":
        keys = sorted({n.model for w in catalog.workflows.values() for n in w.workflow.nodes})
    else:
        keys = sorted(catalog.workflows)
    what = "models" if mode == "micro" else "workflows"
    replicas = dict(replicas or {})
    unknown = sorted(set(replicas) - set(keys))
    if unknown:
        raise ValueError(f"replicas: unknown {what} {unknown}; served {what} are {keys}")
    if autoscale is not None and replicas:
        raise ValueError("replicas: fixed actor counts and autoscale exclude each other")
    if autoscale is None:
        counts = {k: int(replicas.get(k, 1)) for k in keys}
        workers = sum(counts.values())
    else:
        counts = dict.fromkeys(keys, max(autoscale.min_replicas, 1))
        workers = len(keys) * autoscale.max_replicas if max_actors is None else int(max_actors)
        autoscale.init(keys, workers, 0.0)  # checks max_actors before any actor starts
    if autoscale is None and max_actors is not None:
        raise ValueError("max_actors: only with autoscale (else the replicas fix the actors)")
    if mode == "micro":
        specs = {k: catalog.models[k] for k in keys}
    else:
        specs = {k: catalog.workflows[k] for k in keys}
    groups = {
        k: ActorGroup(
            specs[k],
            replicas=n,
            buckets=buckets,
            num_cpus=num_cpus_per_actor,
            warm=warm_up,
            models=catalog.models,
        )
        for k, n in counts.items()
    }
    if warm_up:
        for g in groups.values():
            g.warm_up()
    return ServingRuntime(
        catalog,
        mode=mode,
        num_workers=workers,  # one dispatch thread per busy actor
        replicas=None if autoscale is not None else counts,
        autoscale=autoscale,
        executors=groups if mode == "micro" else None,
        workflow_executors=groups if mode == "monolithic" else None,
        inline_below_s=0.0,  # never block the event loop on a remote call
        buckets=buckets,
        **runtime_kwargs,
    )


def shutdown_actors(runtime: ServingRuntime) -> None:
    """Kill the actor groups of a runtime made by `ray_runtime`."""
    for ex in [*runtime.executors.values(), *runtime.workflow_executors.values()]:
        if isinstance(ex, ActorGroup):
            ex.shutdown()
