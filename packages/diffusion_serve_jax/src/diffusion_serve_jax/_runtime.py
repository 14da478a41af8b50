"""The serving runtime: micro-serving (per-model scheduling) and a monolithic baseline.

`mode="micro"` (LegoDiffusion): every model has its own priority queue of (request, node)
items; any worker (a device slot) picks the model whose queue head is most urgent, batches up
to `max_batch` items from *all* workflows that use that model (one shared instance), and the
finished items release their successor nodes into their models' queues.

`mode="monolithic"` (the baseline): each workflow owns a fixed number of workers (replicas
each holding the whole workflow); a worker batches requests of its own workflow only and
runs the whole DAG for the batch as one unit.

Batches whose measured (EWMA) time is below `inline_below_s` run inline on the event loop
instead of hopping to the worker thread pool: for tiny nodes the two thread hops (submit, then
wake the loop) cost more than the model call itself.

Micro-serving is work-conserving: a model gets as many workers at once as its queue keeps
busy (up to its cap in `replicas`). With `autoscale=autoscaler(...)` the caps are replica
counts that a per-key policy sets from each model's (micro) or workflow's (monolithic) recent
arrival rate, queue length and measured service time (`_autoscale`, applied by `_scaling`).

How many rows a batch takes, and whether a short queue waits for a fuller batch, is one
policy shared with the simulator (`batching=BatchPolicy(...)`, `_batching`); the worker loops
are in `_workers` (and `_memory_workers` under a memory budget), requests and counters in
`_requests`.

Both share the executors, the admission rules and the never-drop contract: `submit` either
raises (`Overloaded` -> HTTP 429 with a retry hint, `ValueError` -> 400) or returns a request
that later completes or fails explicitly.
"""

import asyncio
import concurrent.futures
import heapq
import itertools
import math
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._autoscale import Autoscaler
from ._batching import BatchPolicy, Planner, check_policy, key_profiles
from ._executor import Executor, NodeExecutor
from ._memory_workers import MemoryWorkers
from ._requests import Overloaded as Overloaded
from ._requests import Request as Request
from ._requests import RuntimeStats, fail_future, metrics_text, wait_settled
from ._requests import ShuttingDown as ShuttingDown
from ._scaling import ScalingWorkers
from ._swap_workers import SwapWorkers
from ._workers import ModelWorkers
from ._workflow import Catalog, CompiledWorkflow


class ServingRuntime(ModelWorkers, MemoryWorkers, ScalingWorkers, SwapWorkers):
    def __init__(
        self,
        catalog: Catalog,
        *,
        mode: str = "micro",
        num_workers: int = 4,
        max_batch: int = 16,
        queue_limit: int = 256,
        buckets: Sequence[int] = (1, 2, 4, 8, 16),
        replicas: Mapping[str, int] | None = None,
        default_slo_s: float = 1.0,
        slo_admission: bool = False,
        executors: Mapping[str, Executor] | None = None,
        keep_results: int = 10_000,
        inline_below_s: float = 5e-4,
        memory_bytes: float | None = None,
        loader: Callable[[str], Any] | None = None,
        load_s: Mapping[str, float] | None = None,
        batching: BatchPolicy | None = None,
        split_executors: Mapping[str, Executor] | None = None,
        autoscale: Autoscaler | None = None,
        workflow_executors: Mapping[str, Any] | None = None,
        variants: Mapping[str, Mapping[str, str]] | None = None,
        variant_loader: Callable[[str, str], Any] | None = None,
    ):
        """`memory_bytes` (per worker slot) with `loader` (model name -> its params, the real
        load) and `load_s` (expected seconds per model load) makes workers hold what fits
        and load what they must (see `_memory_workers`); monolithic workers are then no
        longer pinned to one workflow. `batching` (a `BatchPolicy` whose profiles have each
        executor's buckets, e.g. from `NodeExecutor.profile`) replaces the bucket-filling
        batches with the profile-driven policy that the simulator uses (`_batching`).
        `split_executors` (micro mode, no memory budget) maps a model to a second executor
        that splits one batch over several devices (e.g. `sequence_parallel_specs` on a
        mesh): a worker uses it when its batch fits the split executor's largest bucket and,
        as it starts, no other batch is running and every queue is empty (low load: the
        other devices would idle); otherwise the plain executor (`stats.splits` counts).
        `autoscale` (an `autoscaler(...)`, no memory budget) replaces the fixed caps
        (`replicas`) by per-model (micro) or per-workflow (monolithic) replica counts that
        follow the load, summing to at most `num_workers` (`_scaling`).
        `workflow_executors` (monolithic, no memory budget) maps a workflow to an object
        whose `run(batch)` runs its whole DAG on a batch keyed `input.<name>` and returns
        its outputs' sources (`node.output`), e.g. a group of Ray workflow actors.
        `variants` (workflow -> {model: variant}) with `variant_loader` ((model, variant)
        -> that model's weights, e.g. the base with a LoRA merged) makes a monolithic
        runtime the hot-swapping baseline: each of `num_workers` replicas holds one copy of
        the base models, serves any workflow and swaps a variant's weights in before its
        batch (`_swap_workers`, `stats.swaps`)."""
        if mode not in ("micro", "monolithic"):
            raise ValueError(f"mode: expected 'micro' or 'monolithic', got {mode!r}")
        if num_workers < 1 or max_batch < 1 or queue_limit < 1:
            raise ValueError(
                f"num_workers, max_batch, queue_limit: expected >= 1, got "
                f"{num_workers}, {max_batch}, {queue_limit}"
            )
        if not catalog.workflows:
            raise ValueError("catalog: register at least one workflow before serving")
        self.catalog, self.mode = catalog, mode
        self.num_workers, self.max_batch, self.queue_limit = num_workers, max_batch, queue_limit
        self.default_slo_s, self.slo_admission = default_slo_s, slo_admission
        if not inline_below_s >= 0:
            raise ValueError(f"inline_below_s: expected >= 0 seconds, got {inline_below_s}")
        self.inline_below_s = inline_below_s
        used = sorted({n.model for w in catalog.workflows.values() for n in w.workflow.nodes})
        self.executors = dict(executors or {})
        for m in used:
            if m not in self.executors:
                self.executors[m] = NodeExecutor(catalog.models[m], buckets=buckets)
        if autoscale is not None and replicas:
            raise ValueError("replicas: fixed replica counts and autoscale exclude each other")
        pinned = memory_bytes is None and autoscale is None and variants is None
        self.replicas = self._plan_replicas(replicas, used, pinned=pinned)
        self.split_executors = self._check_splits(split_executors or {}, used, memory_bytes)
        self.workflow_executors = dict(workflow_executors or {})
        if self.workflow_executors and (mode != "monolithic" or memory_bytes is not None):
            raise ValueError(
                "workflow_executors: only for monolithic serving without a memory budget"
            )
        unknown = sorted(set(self.workflow_executors) - set(catalog.workflows))
        if unknown:
            raise ValueError(f"workflow_executors: unknown workflows {unknown}")
        self.batching, self._key_profiles = batching, {}
        if batching is not None:
            check_policy(batching, used)
            for m in used:
                if set(batching.profiles[m]) != set(self.executors[m].buckets):
                    raise ValueError(
                        f"batching.profiles[{m!r}]: expected the executor's buckets "
                        f"{self.executors[m].buckets}, got {sorted(batching.profiles[m])}"
                    )
            self._key_profiles = key_profiles(batching, mode, catalog.workflows)
        keys = used if mode == "micro" else sorted(catalog.workflows)
        buckets = {k: self._buckets_of(k) for k in keys}
        self._planner = Planner(batching, self._key_profiles, buckets, max_batch)
        self._timer: asyncio.TimerHandle | None = None
        self._queues: dict[str, list] = {}
        self._seq = itertools.count()
        self._active: dict[str, int] = defaultdict(int)
        self._ewma: dict[str, float] = {}
        self._timed: set[str] = set()  # keys whose first (compiling) batch has been seen
        self._admit_keys: dict[str, list[str]] = {}
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._requests: dict[str, Request] = {}
        self._done_order: deque[str] = deque()
        self._keep = keep_results
        self._inflight: set[Request] = set()
        self._closing = False
        self.stats = RuntimeStats()
        self._init_memory(memory_bytes, loader, load_s)
        self._init_scaling(autoscale, memory_bytes)
        self._init_swap(variants, variant_loader, memory_bytes, autoscale)

    # -- planning --------------------------------------------------------------------------
    def _plan_replicas(
        self, replicas: Mapping[str, int] | None, used: list[str], pinned: bool = True
    ) -> dict:
        if self.mode == "micro":
            caps = {m: self.num_workers for m in used}
            for k, v in (replicas or {}).items():
                if k not in caps:
                    raise ValueError(f"replicas: unknown model {k!r}; served models are {used}")
                caps[k] = int(v)
            return caps
        names = sorted(self.catalog.workflows)
        if not pinned:  # under a memory budget any worker may serve any workflow
            return {w: self.num_workers for w in names}
        if replicas is None:
            if self.num_workers < len(names):
                raise ValueError(
                    f"num_workers: monolithic serving needs a replica per workflow "
                    f"({len(names)}), got {self.num_workers}"
                )
            base, extra = divmod(self.num_workers, len(names))
            return {w: base + (i < extra) for i, w in enumerate(names)}
        unknown = sorted(set(replicas) - set(names))
        if unknown or any(int(replicas.get(w, 0)) < 1 for w in names):
            raise ValueError(
                f"replicas: need >= 1 replica for each workflow {names}, got {dict(replicas)}"
            )
        return {w: int(replicas[w]) for w in names}

    def _check_splits(self, splits, used: list[str], memory_bytes) -> dict:
        if splits and (self.mode != "micro" or memory_bytes is not None):
            raise ValueError(
                "split_executors: only for micro-serving without a memory budget, got "
                f"mode={self.mode!r}, memory_bytes={memory_bytes}"
            )
        for m, ex in splits.items():
            if m not in used:
                raise ValueError(f"split_executors: unknown model {m!r}; served models are {used}")
            spec = self.executors[m].spec
            if (ex.spec.inputs, ex.spec.outputs) != (spec.inputs, spec.outputs):
                raise ValueError(
                    f"split_executors[{m!r}]: expected the inputs and outputs of model {m!r}"
                )
        return dict(splits)

    def memory_bytes(self) -> int:
        """Parameter bytes held: shared models once (micro), one copy of every model per
        replica (hot-swapping monolith) or one copy per workflow replica (mono)."""
        models = self.catalog.models
        if self.mode == "micro":
            return sum(models[m].param_bytes for m in self.executors)
        if self.variants is not None:
            return self.num_workers * sum(models[m].param_bytes for m in self.executors)
        total = 0
        for w, n in self.replicas.items():
            wf = self.catalog.workflows[w].workflow
            total += n * sum(models[m].param_bytes for m in {x.model for x in wf.nodes})
        return total

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("runtime already started")
        self._wake = asyncio.Event()
        self._closing = False
        self._pool = concurrent.futures.ThreadPoolExecutor(self.num_workers)
        self._queues = {k: [] for k in (self.executors if self.mode == "micro" else self.replicas)}
        if self._memory is not None:
            self._tasks = [
                asyncio.create_task(self._memory_worker(i)) for i in range(self.num_workers)
            ]
        elif self.variants is not None:
            self._tasks = [
                asyncio.create_task(self._swap_worker(i)) for i in range(self.num_workers)
            ]
        elif self.mode == "micro":
            self._tasks = [
                asyncio.create_task(self._micro_worker()) for _ in range(self.num_workers)
            ]
        elif self.autoscale is not None:
            self._tasks = [
                asyncio.create_task(self._scaled_mono_worker()) for _ in range(self.num_workers)
            ]
        else:
            self._tasks = [
                asyncio.create_task(self._mono_worker(w))
                for w, n in self.replicas.items()
                for _ in range(n)
            ]
        self._tasks += self._start_scaling()

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests (`ShuttingDown`) and wait up to `timeout_s` seconds for the
        accepted ones to finish; True when none is left. `stop` fails the rest."""
        self._closing = True
        await wait_settled([r.future for r in self._inflight], timeout_s)
        return not self._inflight

    async def stop(self) -> None:
        """Stop the workers; every request still in flight fails with `ShuttingDown`."""
        self._closing = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for req in list(self._inflight):
            self._fail(req, "server shutting down", ShuttingDown("server shutting down"))
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- submission ------------------------------------------------------------------------
    def get(self, request_id: str) -> Request | None:
        return self._requests.get(request_id)

    def submit(
        self,
        workflow: str,
        inputs: Mapping[str, Any],
        *,
        priority: int = 0,
        slo_s: float | None = None,
    ) -> Request:
        """Validate and enqueue one request; raises ValueError (bad input) or Overloaded."""
        if self._closing or not self._tasks:
            raise ShuttingDown("runtime is not running")
        if workflow not in self.catalog.workflows:
            raise KeyError(
                f"workflow: unknown {workflow!r}; known {sorted(self.catalog.workflows)}"
            )
        cw = self.catalog.workflows[workflow]
        spec = cw.workflow.inputs
        if not isinstance(inputs, Mapping):
            raise ValueError(
                f"inputs: expected an object of {sorted(spec)}, got {type(inputs).__name__}"
            )
        if spec.keys() != inputs.keys():
            missing, extra = sorted(set(spec) - set(inputs)), sorted(set(inputs) - set(spec))
            raise ValueError(
                f"inputs: workflow {workflow!r} takes {sorted(spec)}; "
                f"missing {missing}, unexpected {extra}"
            )
        values = {
            f"input.{k}": (s.check(f"inputs.{k}", inputs[k])[None], 0) for k, s in spec.items()
        }
        slo = self.default_slo_s if slo_s is None else float(slo_s)
        if not (slo > 0 and math.isfinite(slo)):
            raise ValueError(f"slo_s: expected a positive finite number of seconds, got {slo_s}")
        self._admit(cw, slo)
        now = time.perf_counter()
        req = Request(
            id=uuid.uuid4().hex,
            workflow=cw,
            priority=int(priority),
            arrival=now,
            deadline=now + slo,
            values=values,
            remaining={n: len(d) for n, d in cw.deps.items()},
            future=asyncio.get_running_loop().create_future(),
            nodes_left=len(cw.order),
        )
        self._requests[req.id] = req
        self._inflight.add(req)
        if self.mode == "micro":
            for n in cw.order:
                if not cw.deps[n]:
                    self._push(cw.node(n).model, req, n)
        else:
            self._push(workflow, req, None)
        return req

    def _admit(self, cw: CompiledWorkflow, slo: float) -> None:
        keys = self._admit_keys.get(cw.name)
        if keys is None:
            models = sorted({n.model for n in cw.workflow.nodes})
            keys = self._admit_keys[cw.name] = models if self.mode == "micro" else [cw.name]
        depth = max(len(self._queues[k]) for k in keys)
        est = self._estimate_wait(cw, keys)
        if depth >= self.queue_limit:
            raise Overloaded(f"queue full ({depth} waiting)", retry_after=max(est, 0.05))
        if self.slo_admission and est > slo:
            raise Overloaded(
                f"estimated latency {est:.3f}s exceeds the SLO {slo:.3f}s",
                retry_after=max(est - slo, 0.05),
            )

    def _estimate_wait(self, cw: CompiledWorkflow, keys: list[str]) -> float:
        est = 0.0
        if self.mode == "micro":
            for n in cw.workflow.nodes:
                q = len(self._queues[n.model])
                t = self._ewma.get(n.model, 0.0)
                est += math.ceil((q + 1) / self.max_batch) * t / max(1, self.replicas[n.model])
        else:
            q = len(self._queues[cw.name])
            t = self._ewma.get(cw.name, 0.0)
            est = math.ceil((q + 1) / self.max_batch) * t / max(1, self.replicas[cw.name])
        return est

    def _push(self, key: str, req: Request, node: str | None) -> None:
        item = (-req.priority, req.deadline, next(self._seq), req, node, time.perf_counter())
        heapq.heappush(self._queues[key], item)
        self._note_arrival(key)
        self._wake.set()

    # -- completion ------------------------------------------------------------------------
    def _finish(self, req: Request) -> None:
        cw = req.workflow
        req.outputs = {}
        for out, src in cw.workflow.outputs.items():
            arr, row = req.values[src]
            req.outputs[out] = arr[row]
        req.status, req.finished = "done", time.perf_counter()
        self._record(req)
        if not req.future.done():
            req.future.set_result(req.outputs)

    def _fail(self, req: Request, message: str, exc: Exception) -> None:
        if req.status in ("done", "failed"):
            return
        req.status, req.error, req.finished = "failed", message, time.perf_counter()
        self._record(req)
        fail_future(req.future, exc)

    def _fail_batch(self, reqs, what: str, exc: BaseException) -> None:
        """Fail every request of a batch whose call raised `exc` (a cancel means shutdown)."""
        for req in reqs:
            if isinstance(exc, asyncio.CancelledError):
                self._fail(req, "server shutting down", ShuttingDown("server shutting down"))
            else:
                self._fail(req, f"{what} failed: {exc}", RuntimeError(str(exc)))

    def _record(self, req: Request) -> None:
        self._inflight.discard(req)
        req.values = {}
        self.stats.record(req)
        self._done_order.append(req.id)
        while len(self._done_order) > self._keep:
            self._requests.pop(self._done_order.popleft(), None)

    # -- introspection ---------------------------------------------------------------------
    def queue_depths(self) -> dict[str, int]:
        return {k: len(q) for k, q in self._queues.items()}

    def metrics_text(self) -> str:
        """Prometheus text exposition of counters, queue depths and latency histogram."""
        label = "model" if self.mode == "micro" else "workflow"
        return metrics_text(
            self.stats, self.queue_depths(), len(self._inflight), self.replicas, label
        )
