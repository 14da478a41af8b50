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
busy (up to its cap in `replicas`), so its replica count follows its load.

Both share the executors, the admission rules and the never-drop contract: `submit` either
raises (`Overloaded` -> HTTP 429 with a retry hint, `ValueError` -> 400) or returns a request
that later completes or fails explicitly.
"""

import asyncio
import concurrent.futures
import dataclasses
import heapq
import itertools
import math
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._executor import NodeExecutor, stack_rows
from ._memory_workers import MemoryWorkers
from ._workflow import Catalog, CompiledWorkflow


def batch_size_for(queued: int, buckets, max_batch: int) -> int:
    """Rows to take from a queue of `queued`: the largest bucket <= min(queued, max_batch),
    or everything (padded) when the queue is shorter than the smallest bucket."""
    cap = min(queued, max_batch)
    fits = [b for b in buckets if b <= cap]
    return max(fits) if fits else cap


def fail_future(future: asyncio.Future, exc: Exception) -> None:
    """Fail `future` once, marking the exception retrieved: its waiter may have gone away."""
    if not future.done():
        future.set_exception(exc)
        future.exception()


class Overloaded(Exception):
    """Admission refused: the queue is full or the SLO cannot be met. Retry after a while."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The runtime is stopping; the request was not (or will not be) served."""


@dataclasses.dataclass(eq=False)
class Request:
    id: str
    workflow: CompiledWorkflow
    priority: int
    arrival: float
    deadline: float
    values: dict[str, tuple[np.ndarray, int]]
    remaining: dict[str, int]
    future: asyncio.Future
    status: str = "queued"
    outputs: dict[str, np.ndarray] | None = None
    error: str | None = None
    finished: float | None = None
    nodes_left: int = 0

    @property
    def latency(self) -> float | None:
        return None if self.finished is None else self.finished - self.arrival


@dataclasses.dataclass
class _Stats:
    requests: dict = dataclasses.field(default_factory=lambda: defaultdict(int))
    batches: dict = dataclasses.field(default_factory=lambda: defaultdict(int))
    batch_rows: dict = dataclasses.field(default_factory=lambda: defaultdict(int))
    latency_sum: float = 0.0
    latency_count: int = 0
    latency_buckets: dict = dataclasses.field(default_factory=lambda: defaultdict(int))
    loads: int = 0  # model (micro) or workflow-replica (mono) loads under a memory budget
    load_seconds: float = 0.0


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServingRuntime(MemoryWorkers):
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
        executors: Mapping[str, NodeExecutor] | None = None,
        keep_results: int = 10_000,
        inline_below_s: float = 5e-4,
        memory_bytes: float | None = None,
        loader: Callable[[str], Any] | None = None,
        load_s: Mapping[str, float] | None = None,
    ):
        """`memory_bytes` (per worker slot) with `loader` (model name -> its params, the real
        load) and `load_s` (expected seconds per model load) makes workers hold what fits
        and load what they must (see `_memory_workers`); monolithic workers are then no
        longer pinned to one workflow."""
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
        self.replicas = self._plan_replicas(replicas, used, pinned=memory_bytes is None)
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
        self.stats = _Stats()
        self._init_memory(memory_bytes, loader, load_s)

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

    def memory_bytes(self) -> int:
        """Parameter bytes held: shared models once (micro) or one copy per workflow (mono)."""
        models = self.catalog.models
        if self.mode == "micro":
            return sum(models[m].param_bytes for m in self.executors)
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
        elif self.mode == "micro":
            self._tasks = [
                asyncio.create_task(self._micro_worker()) for _ in range(self.num_workers)
            ]
        else:
            self._tasks = [
                asyncio.create_task(self._mono_worker(w))
                for w, n in self.replicas.items()
                for _ in range(n)
            ]

    async def stop(self) -> None:
        """Stop the workers; every request still in flight fails with `ShuttingDown`."""
        self._closing = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
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
            est = math.ceil((q + 1) / self.max_batch) * t / self.replicas[cw.name]
        return est

    def _push(self, key: str, req: Request, node: str | None) -> None:
        heapq.heappush(self._queues[key], (-req.priority, req.deadline, next(self._seq), req, node))
        self._wake.set()

    def _pop_batch(self, key: str) -> list[tuple[Request, str | None]]:
        """The most urgent items, as many as the largest bucket that the queue fills.

        Taking a full bucket (no padding) leaves the rest to other free workers: at low load
        requests spread over workers, at high load they batch (adaptive parallelism).
        """
        q = self._queues[key]
        out = []
        n = batch_size_for(len(q), self._buckets_of(key), self.max_batch)
        while q and len(out) < n:
            _, _, _, req, node = heapq.heappop(q)
            if req.status in ("queued", "running"):
                out.append((req, node))
        return out

    def _buckets_of(self, key: str) -> tuple[int, ...]:
        if self.mode == "micro":
            return self.executors[key].buckets
        models = {n.model for n in self.catalog.workflows[key].workflow.nodes}
        return tuple(sorted(set.intersection(*(set(self.executors[m].buckets) for m in models))))

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
        self.stats.requests[(req.workflow.name, req.status)] += 1
        lat = req.latency or 0.0
        self.stats.latency_sum += lat
        self.stats.latency_count += 1
        for b in LATENCY_BUCKETS:
            if lat <= b:
                self.stats.latency_buckets[b] += 1
        self._done_order.append(req.id)
        while len(self._done_order) > self._keep:
            self._requests.pop(self._done_order.popleft(), None)

    def _inline(self, key: str) -> bool:
        return self._ewma.get(key, math.inf) < self.inline_below_s

    def _note_time(self, key: str, seconds: float) -> None:
        if key not in self._timed:  # the first batch of a key includes compilation
            self._timed.add(key)
            return
        old = self._ewma.get(key)
        self._ewma[key] = seconds if old is None else 0.8 * old + 0.2 * seconds

    # -- micro-serving workers -------------------------------------------------------------
    def _pick_model(self) -> str | None:
        best, best_key = None, None
        for m, q in self._queues.items():
            if not q or self._active[m] >= self.replicas[m]:
                continue
            key = q[0][:3]
            if best_key is None or key < best_key:
                best, best_key = m, key
        return best

    async def _micro_worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            model = self._pick_model()
            if model is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            items = self._pop_batch(model)
            if not items:
                continue
            for req, _ in items:
                req.status = "running"
            self._active[model] += 1
            t0 = time.perf_counter()
            try:
                batch = self._gather(model, items)
                if self._inline(model):
                    outs = self.executors[model].run(batch)
                    await asyncio.sleep(0)  # let the loop serve others between inline calls
                else:
                    outs = await loop.run_in_executor(self._pool, self.executors[model].run, batch)
            except asyncio.CancelledError as e:
                self._fail_batch([req for req, _ in items], "", e)
                raise
            except Exception as e:  # noqa: BLE001 - reported to every request of the batch
                self._fail_batch([req for req, _ in items], f"model {model!r}", e)
                continue
            finally:
                self._active[model] -= 1
                self._wake.set()
            self._note_time(model, time.perf_counter() - t0)
            self._complete_micro(model, items, outs)

    def _complete_micro(self, model: str, items, outs: dict[str, np.ndarray]) -> None:
        """Store a model batch's outputs and release each request's successor nodes."""
        self.stats.batches[model] += 1
        self.stats.batch_rows[model] += len(items)
        for i, (req, node) in enumerate(items):
            if req.status != "running":
                continue
            for k, arr in outs.items():
                req.values[f"{node}.{k}"] = (arr, i)
            req.nodes_left -= 1
            for child in req.workflow.children[node]:
                req.remaining[child] -= 1
                if req.remaining[child] == 0:
                    self._push(req.workflow.node(child).model, req, child)
            if req.nodes_left == 0:
                self._finish(req)

    def _gather(self, model: str, items: list[tuple[Request, str]]) -> dict[str, np.ndarray]:
        node0 = {}
        batch = {}
        for arg in self.catalog.models[model].inputs:
            refs = []
            for req, node in items:
                n = node0.setdefault((req.workflow.name, node), req.workflow.node(node))
                refs.append(req.values[n.inputs[arg]])
            batch[arg] = stack_rows(refs)
        return batch

    # -- monolithic workers ----------------------------------------------------------------
    def _run_workflow(self, cw: CompiledWorkflow, reqs: list[Request]) -> None:
        for name in cw.order:
            node = cw.node(name)
            batch = {
                arg: stack_rows([r.values[src] for r in reqs]) for arg, src in node.inputs.items()
            }
            outs = self.executors[node.model].run(batch)
            for i, r in enumerate(reqs):
                for k, arr in outs.items():
                    r.values[f"{name}.{k}"] = (arr, i)

    async def _mono_worker(self, workflow: str) -> None:
        loop = asyncio.get_running_loop()
        cw = self.catalog.workflows[workflow]
        while True:
            items = self._pop_batch(workflow)
            if not items:
                self._wake.clear()
                await self._wake.wait()
                continue
            reqs = [r for r, _ in items]
            for r in reqs:
                r.status = "running"
            t0 = time.perf_counter()
            try:
                if self._inline(workflow):
                    self._run_workflow(cw, reqs)
                    await asyncio.sleep(0)
                else:
                    await loop.run_in_executor(self._pool, self._run_workflow, cw, reqs)
            except asyncio.CancelledError as e:
                self._fail_batch(reqs, "", e)
                raise
            except Exception as e:  # noqa: BLE001 - reported to every request of the batch
                self._fail_batch(reqs, f"workflow {workflow!r}", e)
                continue
            finally:
                self._wake.set()
            self._note_time(workflow, time.perf_counter() - t0)
            self._complete_mono(workflow, reqs)

    def _complete_mono(self, workflow: str, reqs: list[Request]) -> None:
        self.stats.batches[workflow] += 1
        self.stats.batch_rows[workflow] += len(reqs)
        for r in reqs:
            if r.status == "running":
                r.nodes_left = 0
                self._finish(r)

    # -- introspection ---------------------------------------------------------------------
    def queue_depths(self) -> dict[str, int]:
        return {k: len(q) for k, q in self._queues.items()}

    def metrics_text(self) -> str:
        """Prometheus text exposition of counters, queue depths and latency histogram."""
        lines = ["# TYPE diffusion_requests_total counter"]
        for (w, s), n in sorted(self.stats.requests.items()):
            lines.append(f'diffusion_requests_total{{workflow="{w}",status="{s}"}} {n}')
        lines.append("# TYPE diffusion_queue_depth gauge")
        for k, n in sorted(self.queue_depths().items()):
            lines.append(f'diffusion_queue_depth{{queue="{k}"}} {n}')
        lines.append("# TYPE diffusion_batches_total counter")
        for k, n in sorted(self.stats.batches.items()):
            lines.append(f'diffusion_batches_total{{queue="{k}"}} {n}')
            lines.append(f'diffusion_batch_rows_total{{queue="{k}"}} {self.stats.batch_rows[k]}')
        lines.append("# TYPE diffusion_loads_total counter")
        lines.append(f"diffusion_loads_total {self.stats.loads}")
        lines.append("# TYPE diffusion_inflight gauge")
        lines.append(f"diffusion_inflight {len(self._inflight)}")
        lines.append("# TYPE diffusion_latency_seconds histogram")
        for b in LATENCY_BUCKETS:
            lines.append(
                f'diffusion_latency_seconds_bucket{{le="{b}"}} {self.stats.latency_buckets[b]}'
            )
        lines.append(f'diffusion_latency_seconds_bucket{{le="+Inf"}} {self.stats.latency_count}')
        lines.append(f"diffusion_latency_seconds_sum {self.stats.latency_sum:.6f}")
        lines.append(f"diffusion_latency_seconds_count {self.stats.latency_count}")
        return "\n".join(lines) + "\n"
