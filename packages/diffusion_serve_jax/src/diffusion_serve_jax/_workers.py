"""Worker loops of `ServingRuntime` without a memory budget, and the batch each one takes.

Micro-serving: any worker picks the model whose queue head is most urgent (among queues that
are ready to give a batch), takes a batch from every workflow that uses it and releases the
items' successor nodes (with a split executor for the model, a lone batch at low load runs
split over several devices: `_executor_for`). Monolithic: each worker belongs to one
workflow and runs its whole DAG for a batch of that workflow's requests. How many rows a
batch holds, and whether a queue waits for more, is `_batching.Planner` (the simulator's
policy too); a waiting queue arms a timer that wakes the workers when its wait runs out.
"""

import asyncio
import heapq
import math
import time

import numpy as np

from ._executor import stack_rows
from ._requests import Request
from ._workflow import CompiledWorkflow


class ModelWorkers:
    """Mixin of `ServingRuntime`: batching and the micro / monolithic worker loops."""

    # -- batches ---------------------------------------------------------------------------
    def _ready(self, key: str) -> int:
        """Rows a worker would take from `key`'s queue now (0: empty, or waiting for a
        fuller batch; then a timer wakes the workers when the wait runs out)."""
        q = self._queues[key]
        if not q:
            return 0
        now = time.perf_counter()
        n, wake = self._planner.plan(
            key, len(q), now, lambda: (min(e[5] for e in q), min(e[1] for e in q))
        )
        if n == 0:
            self._arm_timer(wake - now)
        return n

    def _arm_timer(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        at = loop.time() + max(delay, 0.0)
        if self._timer is not None and self._timer.when() <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self.stats.waits += 1
        self._timer = loop.call_at(at, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._wake.set()

    def _pop_batch(self, key: str) -> list[tuple[Request, str | None]]:
        """The most urgent items, as many as `_ready` allows (none while the queue waits).

        Without a `BatchPolicy` a batch is the largest bucket that the queue fills (no
        padding), leaving the rest to other free workers: at low load requests spread over
        workers, at high load they batch (adaptive parallelism).
        """
        q = self._queues[key]
        out = []
        n = self._ready(key)
        while q and len(out) < n:
            _, _, _, req, node, _ = heapq.heappop(q)
            if req.status in ("queued", "running"):
                out.append((req, node))
        return out

    def _buckets_of(self, key: str) -> tuple[int, ...]:
        if self.mode == "micro":
            return self.executors[key].buckets
        models = {n.model for n in self.catalog.workflows[key].workflow.nodes}
        return tuple(sorted(set.intersection(*(set(self.executors[m].buckets) for m in models))))

    def _inline(self, key: str) -> bool:
        return self._ewma.get(key, math.inf) < self.inline_below_s

    def _note_time(self, key: str, seconds: float, rows: int) -> None:
        if key not in self._timed:  # the first batch of a key includes compilation
            self._timed.add(key)
            return
        self._note_busy(key, seconds, rows)
        old = self._ewma.get(key)
        self._ewma[key] = seconds if old is None else 0.8 * old + 0.2 * seconds

    # -- micro-serving ---------------------------------------------------------------------
    def _pick_model(self) -> str | None:
        best, best_key = None, None
        for m, q in self._queues.items():
            if not q or self._active[m] >= self.replicas[m]:
                continue
            key = q[0][:3]
            if (best_key is None or key < best_key) and self._ready(m):
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
            ex = self._executor_for(model, len(items))
            t0 = time.perf_counter()
            try:
                batch = self._gather(model, items)
                if self._inline(model):
                    outs = ex.run(batch)
                    await asyncio.sleep(0)  # let the loop serve others between inline calls
                else:
                    outs = await loop.run_in_executor(self._pool, ex.run, batch)
            except asyncio.CancelledError as e:
                self._fail_batch([req for req, _ in items], "", e)
                raise
            except Exception as e:  # noqa: BLE001 - reported to every request of the batch
                self._fail_batch([req for req, _ in items], f"model {model!r}", e)
                continue
            finally:
                self._active[model] -= 1
                self._wake.set()
            if ex is self.executors[model]:  # the EWMA (admission, inlining) stays unsplit
                self._note_time(model, time.perf_counter() - t0, len(items))
            self._complete_micro(model, items, outs)

    def _executor_for(self, model: str, rows: int):
        """The split executor at low load: the batch fits it, it is the only batch running
        (this worker's own count is already in `_active`) and nothing else is queued."""
        split = self.split_executors.get(model)
        if (
            split is None
            or rows > split.buckets[-1]
            or sum(self._active.values()) > 1
            or any(self._queues.values())
        ):
            return self.executors[model]
        self.stats.splits[model] += 1
        return split

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

    # -- monolithic ------------------------------------------------------------------------
    def _run_workflow(self, cw: CompiledWorkflow, reqs: list[Request], executors=None) -> None:
        remote = self.workflow_executors.get(cw.name)
        if remote is not None:  # the whole DAG in one call (a Ray workflow actor)
            keys = [f"input.{k}" for k in cw.workflow.inputs]
            outs = remote.run({k: stack_rows([r.values[k] for r in reqs]) for k in keys})
            for src, arr in outs.items():
                for i, r in enumerate(reqs):
                    r.values[src] = (arr, i)
            return
        for name in cw.order:
            node = cw.node(name)
            batch = {
                arg: stack_rows([r.values[src] for r in reqs]) for arg, src in node.inputs.items()
            }
            outs = (executors or self.executors)[node.model].run(batch)
            for i, r in enumerate(reqs):
                for k, arr in outs.items():
                    r.values[f"{name}.{k}"] = (arr, i)

    async def _mono_worker(self, workflow: str) -> None:
        while True:
            if not await self._mono_batch(workflow):
                self._wake.clear()
                await self._wake.wait()

    async def _mono_batch(self, workflow: str) -> bool:
        """Run one batch of `workflow`'s whole DAG; False when its queue gave none."""
        loop = asyncio.get_running_loop()
        cw = self.catalog.workflows[workflow]
        items = self._pop_batch(workflow)
        if not items:
            return False
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
            return True
        finally:
            self._wake.set()
        self._note_time(workflow, time.perf_counter() - t0, len(reqs))
        self._complete_mono(workflow, reqs)
        return True

    def _complete_mono(self, workflow: str, reqs: list[Request]) -> None:
        self.stats.batches[workflow] += 1
        self.stats.batch_rows[workflow] += len(reqs)
        for r in reqs:
            if r.status == "running":
                r.nodes_left = 0
                self._finish(r)
