"""Workers under a per-device memory budget (`ServingRuntime(memory_bytes=...)`).

Each worker slot is a device that holds what fits in `memory_bytes`: models in micro-serving
(one instance shared by every workflow), whole workflow replicas in monolithic serving (their
own copy of each model). A worker serves the most urgent queue among the keys it holds; with
nothing of its own to do it brings in (really loads, through `loader`) the most urgent key
that no idle worker holds and no busy holder will free up for before the load would finish,
evicting its least recently used keys. The simulator's `memory_bytes` follows the same policy
(`DeviceMemory`, `initial_placement`).
"""

import asyncio
import math
import time

from ._residency import DeviceMemory, initial_placement


class MemoryWorkers:
    """Mixin of `ServingRuntime`: the memory-budget worker loop."""

    def _init_memory(self, memory_bytes, loader, load_s) -> None:
        self._memory = None
        self._idle: set[int] = set()
        self._busy_until: dict[int, float] = {}
        if memory_bytes is None:
            return
        if loader is None or load_s is None:
            raise ValueError("memory_bytes: also pass loader (model -> params) and load_s")
        names = sorted(self.catalog.workflows)
        self._models_of = {
            w: sorted({n.model for n in self.catalog.workflows[w].workflow.nodes}) for w in names
        }
        lacking = sorted(set(self.executors) - set(load_s))
        if lacking:
            raise ValueError(f"load_s: need a load time for every model; missing {lacking}")
        nbytes = {m: self.catalog.models[m].param_bytes for m in self.executors}
        if self.mode == "micro":
            size, load = nbytes, {m: float(load_s[m]) for m in self.executors}
            self._models_of |= {m: [m] for m in self.executors}
        else:
            size = {w: sum(nbytes[m] for m in self._models_of[w]) for w in names}
            load = {w: sum(float(load_s[m]) for m in self._models_of[w]) for w in names}
        placement = initial_placement(self.mode, names, self._models_of, self.num_workers)
        self._memory = DeviceMemory(float(memory_bytes), size, load, placement)
        self._loader = loader

    def _pick_held(self, wi: int) -> str | None:
        best, best_key = None, None
        for k, q in self._queues.items():
            if not (q and self._memory.holds(wi, k)) or (best_key and q[0][:3] >= best_key):
                continue
            if self._ready(k):
                best, best_key = k, q[0][:3]
        return best

    def _pick_load(self, wi: int) -> str | None:
        now = time.perf_counter()
        best, best_key = None, None
        for k, q in self._queues.items():
            if not q or not self._ready(k):
                continue
            holders = self._memory.holders[k] - {wi}
            if any(d not in self._busy_until for d in holders):
                continue  # an idle (or about to pick) holder takes it
            wait = min((self._busy_until[d] - now for d in holders), default=math.inf)
            load = self._memory.load[k]
            if wait <= load:
                continue  # a busy holder frees up before a load would finish
            key = (q[0][0], q[0][1] + load, q[0][2])
            if best_key is None or key < best_key:
                best, best_key = k, key
        return best

    def _load_and_run(self, key, loading, items):
        """Worker-thread body: load the key's models if needed, then run the batch."""
        load_t = 0.0
        if loading:
            t0 = time.perf_counter()
            for m in self._models_of[key]:
                self.executors[m].set_params(self._loader(m))
            load_t = time.perf_counter() - t0
        t0 = time.perf_counter()
        if self.mode == "micro":
            outs = self.executors[key].run(self._gather(key, items))
        else:
            outs = self._run_workflow(self.catalog.workflows[key], [r for r, _ in items])
        return outs, load_t, time.perf_counter() - t0

    async def _memory_worker(self, wi: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            key = self._pick_held(wi)
            if key is None:
                key = self._pick_load(wi)
            if key is None:
                self._idle.add(wi)
                self._wake.clear()
                await self._wake.wait()
                self._idle.discard(wi)
                continue
            items = self._pop_batch(key)
            if not items:
                continue
            loading = self._memory.bring(wi, key) > 0
            for req, _ in items:
                req.status = "running"
            est = self._ewma.get(key, 0.0) + (self._memory.load[key] if loading else 0.0)
            self._busy_until[wi] = time.perf_counter() + est
            try:
                if not loading and self._inline(key):
                    outs, load_t, run_t = self._load_and_run(key, loading, items)
                    await asyncio.sleep(0)
                else:
                    outs, load_t, run_t = await loop.run_in_executor(
                        self._pool, self._load_and_run, key, loading, items
                    )
            except asyncio.CancelledError as e:
                self._fail_batch([req for req, _ in items], "", e)
                raise
            except Exception as e:  # noqa: BLE001 - reported to every request of the batch
                self._fail_batch([req for req, _ in items], repr(key), e)
                continue
            finally:
                self._busy_until.pop(wi, None)
                self._wake.set()
            if loading:
                self.stats.loads += 1
                self.stats.load_seconds += load_t
            self._note_time(key, run_t, len(items))
            if self.mode == "micro":
                self._complete_micro(key, items, outs)
            else:
                self._complete_mono(key, [r for r, _ in items])
