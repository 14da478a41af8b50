"""A LoRA hot-swapping monolith (`ServingRuntime(mode="monolithic", variants=...,
variant_loader=...)`): the strongest monolithic baseline for many workflow variants that
share base models, as Diffusers-style servers run them.

Every worker is one replica holding one copy of the base models (its own parameters in
executors that share the compiled functions: no recompilation) and serves any workflow. A
workflow's variant names, per model, the adapter its requests need (`variants[w][model]`,
e.g. a LoRA); a model a workflow does not name runs its base weights. Before a batch of
workflow `w` the worker swaps in, with `NodeExecutor.set_params`, the weights of every model
whose held variant differs: `variant_loader(model, variant)` (for instance the base weights
with the variant's LoRA merged, copied to the device), or the base weights back. The real
merge / copy time is paid in the worker's thread and counted (`stats.swaps`: batches that
swapped, `stats.swap_seconds`). A worker prefers the most urgent queue it can serve without
a swap, and otherwise swaps for the most urgent queue that no idle worker holds.
"""

import asyncio
import time


class SwapWorkers:
    """Mixin of `ServingRuntime`: monolithic replicas that hot-swap adapter weights."""

    def _init_swap(self, variants, variant_loader, memory_bytes, autoscale) -> None:
        self.variants = None
        if variants is None and variant_loader is None:
            return
        if variants is None or variant_loader is None:
            raise ValueError("variants, variant_loader: pass both (or neither)")
        if self.mode != "monolithic" or memory_bytes is not None or autoscale is not None:
            raise ValueError(
                "variants: only for monolithic serving without memory_bytes or autoscale, got "
                f"mode={self.mode!r}"
            )
        if self.workflow_executors:
            raise ValueError("variants: not with workflow_executors")
        unknown = sorted(set(variants) - set(self.catalog.workflows))
        if unknown:
            raise ValueError(f"variants: unknown workflows {unknown}")
        for w, per_model in variants.items():
            models = {n.model for n in self.catalog.workflows[w].workflow.nodes}
            extra = sorted(set(per_model) - models)
            if extra:
                raise ValueError(f"variants[{w!r}]: models {extra} are not nodes of workflow {w!r}")
        self.variants = {w: dict(v) for w, v in variants.items()}
        self._variant_loader = variant_loader
        self._held = [{} for _ in range(self.num_workers)]  # model -> variant (None: base)
        self._replica_execs = [
            {m: self.executors[m].replica() for m in self.executors}
            for _ in range(self.num_workers)
        ]
        self._swap_idle: set[int] = set()

    def _wants(self, wi: int, workflow: str) -> dict[str, str | None]:
        """Models of `workflow` whose weights worker `wi` must swap, with the variant."""
        want = self.variants.get(workflow, {})
        out = {}
        for n in self.catalog.workflows[workflow].workflow.nodes:
            v = want.get(n.model)
            if self._held[wi].get(n.model) != v:
                out[n.model] = v
        return out

    def _pick_swap(self, wi: int) -> str | None:
        held, held_key, other, other_key = None, None, None, None
        for w, q in self._queues.items():
            if not q:
                continue
            head = q[0][:3]
            if not self._wants(wi, w):
                if (held_key is None or head < held_key) and self._ready(w):
                    held, held_key = w, head
            elif other_key is None or head < other_key:
                if any(not self._wants(d, w) for d in self._swap_idle - {wi}):
                    continue  # an idle worker holds this variant and takes it
                if self._ready(w):
                    other, other_key = w, head
        return held if held is not None else other

    def _swap_and_run(self, wi: int, workflow: str, swaps: dict, reqs) -> tuple[float, float]:
        """Worker-thread body: swap the variant's weights in, then run the whole DAG."""
        execs = self._replica_execs[wi]
        t0 = time.perf_counter()
        for m, v in swaps.items():
            params = self.catalog.models[m].params if v is None else self._variant_loader(m, v)
            execs[m].set_params(params)
            self._held[wi][m] = v
        swap_t = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._run_workflow(self.catalog.workflows[workflow], reqs, execs)
        return swap_t, time.perf_counter() - t0

    async def _swap_worker(self, wi: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            workflow = self._pick_swap(wi)
            items = [] if workflow is None else self._pop_batch(workflow)
            if not items:
                self._swap_idle.add(wi)
                self._wake.clear()
                await self._wake.wait()
                self._swap_idle.discard(wi)
                continue
            reqs = [r for r, _ in items]
            for r in reqs:
                r.status = "running"
            swaps = self._wants(wi, workflow)
            try:
                swap_t, run_t = await loop.run_in_executor(
                    self._pool, self._swap_and_run, wi, workflow, swaps, reqs
                )
            except asyncio.CancelledError as e:
                self._fail_batch(reqs, "", e)
                raise
            except Exception as e:  # noqa: BLE001 - reported to every request of the batch
                self._held[wi] = {}  # a half-done swap: unknown weights, swap everything next
                for m, ex in self._replica_execs[wi].items():
                    ex.set_params(self.catalog.models[m].params)
                self._fail_batch(reqs, f"workflow {workflow!r}", e)
                continue
            finally:
                self._wake.set()
            if swaps:
                self.stats.swaps += 1
                self.stats.swap_seconds += swap_t
            self._note_time(workflow, run_t, len(reqs))
            self._complete_mono(workflow, reqs)
