"""The runtime side of autoscaling (`ServingRuntime(autoscale=autoscaler(...))`).

A replica is a worker slot (a device) assigned to one key: a model in micro-serving, a whole
workflow in monolithic serving. `replicas[key]` caps how many batches of that key run at once,
and the caps sum to at most `num_workers` (the policy's capacity). Every `interval_s` a
controller task hands each key's load since the last tick (items queued, queue length, busy
seconds and rows of the finished batches; a key's first, compiling batch is not counted) to
the pure policy (`_autoscale`) and applies its counts. Growing lets more workers take the
key's batches at once (for the Ray backend it also starts actors: `executor.resize`);
shrinking stops new batches of the key beyond the new count while the batches in flight run
to the end, so no accepted request is dropped. A key at zero replicas whose queue receives an
item triggers a tick at once (cold start). Changes are counted in `stats.scale_ups` /
`stats.scale_downs` and listed in `stats.scale_events`; `/metrics` reports
`diffusion_replicas` and `diffusion_scaling_events_total`.
"""

import asyncio
import time
from collections import defaultdict

from ._autoscale import Autoscaler, KeyLoad


class ScalingWorkers:
    """Mixin of `ServingRuntime`: the autoscaling controller and the monolithic worker that
    serves any workflow within its replica count."""

    def _init_scaling(self, autoscale: Autoscaler | None, memory_bytes) -> None:
        self.autoscale = autoscale
        self._scale_state = None
        self._arrivals: dict[str, int] = defaultdict(int)
        self._busy: dict[str, float] = defaultdict(float)
        self._rows: dict[str, int] = defaultdict(int)
        if autoscale is None:
            return
        if not isinstance(autoscale, Autoscaler):
            raise TypeError(
                f"autoscale: expected an Autoscaler (autoscaler(...)), got "
                f"{type(autoscale).__name__}"
            )
        if memory_bytes is not None:
            raise ValueError(
                "autoscale: not with memory_bytes (under a memory budget workers load what "
                "they serve; the two policies would fight over the slots)"
            )
        keys = self._scale_keys()
        autoscale.init(keys, self.num_workers, 0.0)  # checks the capacity before serving
        self.replicas = {k: autoscale.min_replicas for k in keys}

    def _scale_keys(self) -> list[str]:
        if self.mode == "micro":
            return sorted(self.executors)
        return sorted(self.catalog.workflows)

    def _start_scaling(self) -> list[asyncio.Task]:
        if self.autoscale is None:
            return []
        self._scale_state = self.autoscale.init(
            self._scale_keys(), self.num_workers, time.perf_counter()
        )
        self._arrivals.clear()
        self._busy.clear()
        self._rows.clear()
        self._apply_replicas()
        return [asyncio.create_task(self._scale_loop())]

    async def _scale_loop(self) -> None:
        while True:
            await asyncio.sleep(self.autoscale.interval_s)
            self._scale_tick()

    def _scale_tick(self) -> None:
        loads = {
            k: KeyLoad(self._arrivals[k], len(self._queues[k]), self._busy[k], self._rows[k])
            for k in self._scale_state.keys
        }
        self._arrivals.clear()
        self._busy.clear()
        self._rows.clear()
        self._scale_state = self.autoscale.update(self._scale_state, loads, time.perf_counter())
        self._apply_replicas()

    def _apply_replicas(self) -> None:
        now = time.perf_counter()
        grew = False
        for k, n in zip(self._scale_state.keys, self._scale_state.replicas, strict=True):
            old = self.replicas.get(k, 0)
            ex = (self.executors if self.mode == "micro" else self.workflow_executors).get(k)
            if hasattr(ex, "resize"):  # an actor group keeps one actor (a cold one takes seconds)
                ex.resize(max(n, 1))
            if n == old:
                continue
            self.replicas[k] = n
            self.stats.scale_events.append((now, k, old, n))
            if n > old:
                self.stats.scale_ups[k] += 1
                grew = True
            else:
                self.stats.scale_downs[k] += 1
        if grew and self._wake is not None:
            self._wake.set()

    def _note_arrival(self, key: str) -> None:
        if self.autoscale is None:
            return
        self._arrivals[key] += 1
        if self.replicas.get(key, 0) == 0 and self._scale_state is not None:
            self._scale_tick()  # cold start: do not wait for the next tick

    def _note_busy(self, key: str, seconds: float, rows: int) -> None:
        if self.autoscale is None:
            return
        self._busy[key] += seconds
        self._rows[key] += rows

    async def _scaled_mono_worker(self) -> None:
        """A monolithic worker under autoscaling: it serves the most urgent workflow whose
        running batches are below its replica count (`_pick_model` over workflow queues)."""
        while True:
            workflow = self._pick_model()
            if workflow is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._active[workflow] += 1
            try:
                await self._mono_batch(workflow)
            finally:
                self._active[workflow] -= 1
                self._wake.set()
