"""Serving edit requests: a step-level (continuous) batching engine with cache prefetching and
per-request block plans (the template caches live in `TemplateStore`, balancing across
engines in `_balancing`).

`EditEngine.run(arrivals)` serves timed requests on the real clock. With
`batching="continuous"` waiting requests join the running batch before every denoising step
and finished ones leave after it (per-sample timesteps); with `"static"` a batch runs all its
steps before the next one starts. `compute="masked"` recomputes only masked tokens against the
template cache (InstGenIE); `"full"` recomputes every token (the baseline). With `prefetch`
the next step's cache rows of continuing requests are gathered while the current step runs.
"""

import collections
import dataclasses
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._diffusion import Schedule, ddim_timesteps
from ._editing import TemplateCache, compiled_steps, edit_noise, token_mask
from ._executor import pick_bucket
from ._models import DiT
from ._template_store import TemplateStore


@dataclasses.dataclass(eq=False)
class EditRequest:
    template: str
    mask: np.ndarray  # (H, W) in {0, 1}
    label: int
    seed: int = 0


@dataclasses.dataclass(eq=False)
class _Job:
    idx: int
    req: EditRequest
    arrival: float
    cache: TemplateCache
    cond: np.ndarray
    ids: np.ndarray
    keep: np.ndarray
    state: np.ndarray
    mask: np.ndarray
    full_blocks: int = 0
    templ: np.ndarray | None = None  # the template's patches per step, when full_blocks > 0
    step: int = 0


@dataclasses.dataclass
class EngineStats:
    steps: int = 0
    rows: int = 0
    load_s: float = 0.0  # all cache-loading time
    hidden_load_s: float = 0.0  # the part that ran while a step was computing
    compute_s: float = 0.0
    plans: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(int))

    @property
    def overlap(self) -> float:
        return self.hidden_load_s / self.load_s if self.load_s > 0 else float("nan")


class EditEngine:
    def __init__(
        self,
        dit: DiT,
        encode: Callable,
        schedule: Schedule,
        store: TemplateStore,
        *,
        steps: int,
        compute: str = "masked",
        batching: str = "continuous",
        max_batch: int = 8,
        batch_buckets: Sequence[int] = (1, 2, 4, 8),
        token_buckets: Sequence[int] = (4, 8, 16),
        impl: str = "ref",
        prefetch: bool = True,
        plan: Callable[[int], int] | None = None,
    ):
        if compute not in ("masked", "full"):
            raise ValueError(f"compute: expected 'masked' or 'full', got {compute!r}")
        if batching not in ("continuous", "static"):
            raise ValueError(f"batching: expected 'continuous' or 'static', got {batching!r}")
        if max(batch_buckets) < max_batch:
            raise ValueError(f"batch_buckets: largest {max(batch_buckets)} < max_batch {max_batch}")
        self.dit, self.store, self.steps = dit, store, steps
        self.compute, self.batching, self.max_batch = compute, batching, max_batch
        self.batch_buckets = tuple(sorted(batch_buckets))
        self.token_buckets = tuple(sorted(set(token_buckets) | {dit.num_tokens}))
        self.prefetch = prefetch and compute == "masked"
        self.plan = plan  # masked token count -> leading blocks recomputed in full
        ts = ddim_timesteps(schedule.alphas_cumprod.shape[0], steps)
        self.ts, self.ts_prev = ts, np.append(ts[1:], -1).astype(np.int32)
        self._encode, self._masked, self._full = compiled_steps(dit, encode, schedule, impl)
        self.stats = EngineStats()
        self._conds: dict[int, np.ndarray] = {}

    def plans(self) -> set[tuple[int, int]]:
        """The (token bucket, full blocks) pairs a masked step can take."""
        if self.plan is None:
            return {(mb, 0) for mb in self.token_buckets}
        return {
            (pick_bucket(m, self.token_buckets), self._full_blocks(m))
            for m in range(1, self.dit.num_tokens + 1)
        }

    def _full_blocks(self, num_masked: int) -> int:
        if self.plan is None or self.compute == "full":
            return 0
        fb = int(self.plan(num_masked))
        if not 0 <= fb <= len(self.dit.blocks):
            raise ValueError(f"plan: returned {fb} full blocks, expected 0..{len(self.dit.blocks)}")
        return fb

    def warmup(self) -> None:
        """Compile every (batch bucket, token bucket, block plan) shape before serving."""
        d, p = self.dit, self.dit.patch**2
        w = self._encode(jnp.zeros((1,), jnp.int32)).shape[-1]
        for bb in self.batch_buckets:
            t = np.full((bb,), self.ts[0], np.int32)
            c = np.zeros((bb, w), np.float32)
            if self.compute == "full":
                z = np.zeros((bb, d.image_size, d.image_size), np.float32)
                jax.block_until_ready(self._full(z, t, t, c, z, z))
                continue
            for mb, fb in sorted(self.plans()):
                kv = np.zeros((bb, *self._kv_shape(fb)), np.float32)
                extra = (np.zeros((bb, d.num_tokens, p), np.float32),) if fb else ()
                kw = {"full_blocks": fb} if fb else {}
                jax.block_until_ready(
                    self._masked(
                        np.zeros((bb, mb, p), np.float32),
                        np.zeros((bb, mb), np.int32),
                        np.ones((bb, mb), np.float32),
                        t,
                        t,
                        c,
                        kv,
                        kv,
                        np.ones((bb, d.num_tokens), np.float32),
                        *extra,
                        **kw,
                    )
                )

    def _kv_shape(self, full_blocks: int = 0):
        b = self.dit.blocks[0]
        depth = len(self.dit.blocks) - full_blocks
        return (depth, self.dit.num_tokens, b.heads, self.dit.width // b.heads)

    # -- requests ----------------------------------------------------------------------------
    def validate(self, req: EditRequest) -> None:
        size = self.dit.image_size
        m = np.asarray(req.mask)
        if m.shape != (size, size):
            raise ValueError(f"mask: expected shape ({size}, {size}), got {m.shape}")
        if not np.all(np.isfinite(m)) or m.min() < 0 or m.max() > 1:
            raise ValueError("mask: values must be finite and in [0, 1]")
        if not m.any():
            raise ValueError("mask: is empty; nothing to edit")
        if req.template not in self.store:
            raise KeyError(f"template: unknown {req.template!r}")
        if not 0 <= int(req.label) < 10:
            raise ValueError(f"label: expected a digit 0..9, got {req.label}")

    def _admit(self, idx: int, req: EditRequest, arrival: float) -> _Job:
        cache = self.store.get(req.template)
        mask = (np.asarray(req.mask) > 0.5).astype(np.float32)
        tm = token_mask(self.dit, mask)
        x0 = np.where(mask > 0, edit_noise(req.seed, mask.shape), cache.xs[0]).astype(np.float32)
        ids = np.flatnonzero(tm)
        state = self._patchify(x0)[ids] if self.compute == "masked" else x0
        label = int(req.label)
        if label not in self._conds:
            self._conds[label] = np.asarray(self._encode(jnp.array([label])))[0]
        cond = self._conds[label]
        fb = self._full_blocks(len(ids))
        self.stats.plans[fb] += 1
        templ = None
        if fb:
            g, p = self.dit.grid, self.dit.patch
            xs = np.asarray(cache.xs, np.float32)
            templ = np.ascontiguousarray(
                xs.reshape(-1, g, p, g, p).transpose(0, 1, 3, 2, 4).reshape(len(xs), g * g, p * p)
            )
        keep = (~tm).astype(np.float32)
        return _Job(idx, req, arrival, cache, cond, ids, keep, state, mask, fb, templ)

    # -- one batched step -----------------------------------------------------------------------
    def _load(self, jobs: list[_Job], steps: list[int], full_blocks: int = 0):
        t0 = time.perf_counter()
        pairs = list(zip(jobs, steps, strict=True))
        k = np.stack([j.cache.k[s][full_blocks:] for j, s in pairs])
        v = np.stack([j.cache.v[s][full_blocks:] for j, s in pairs])
        return (k, v), time.perf_counter() - t0

    def _step(self, jobs: list[_Job], prefetched):
        if self.compute == "full":
            n = len(jobs)
            bb = pick_bucket(n, self.batch_buckets)
            rows = list(range(n)) + [0] * (bb - n)
            t = self.ts[[jobs[r].step for r in rows]]
            tp = self.ts_prev[[jobs[r].step for r in rows]]
            c = np.stack([jobs[r].cond for r in rows])
            x = np.stack([jobs[r].state for r in rows])
            m = np.stack([jobs[r].mask for r in rows])
            xn = np.stack([jobs[r].cache.xs[jobs[r].step + 1] for r in rows])
            t0 = time.perf_counter()
            out = np.asarray(self._full(x, t, tp, c, m, xn))
            self.stats.compute_s += time.perf_counter() - t0
            for i, j in enumerate(jobs):
                j.state = out[i]
            return None
        # one call per block plan (jobs with the same number of full blocks batch together)
        groups: dict[int, list[_Job]] = {}
        for j in jobs:
            groups.setdefault(j.full_blocks, []).append(j)
        prefetched = prefetched or {}
        t0 = time.perf_counter()
        launched = [(fb, js, self._launch(js, fb, prefetched.get(fb))) for fb, js in groups.items()]
        nxt = {}
        if self.prefetch:  # gather the next step's cache rows while this step computes
            dt = 0.0
            for fb, js, _ in launched:
                cont = [j for j in js if j.step + 1 < self.steps and fb < len(self.dit.blocks)]
                if cont:
                    kv, d = self._load(cont, [j.step + 1 for j in cont], fb)
                    nxt[fb] = ([j.idx for j in cont], kv)
                    dt += d
            if dt:
                waited = time.perf_counter()
                launched[-1][2].block_until_ready()
                self.stats.load_s += dt
                if time.perf_counter() - waited > 1e-5:
                    self.stats.hidden_load_s += dt
        for _, js, fut in launched:
            out = np.asarray(fut)
            for i, j in enumerate(js):
                j.state = out[i, : len(j.ids)]
        self.stats.compute_s += time.perf_counter() - t0
        return nxt

    def _launch(self, jobs: list[_Job], fb: int, prefetched):
        """Dispatch one masked step for jobs sharing the block plan `fb` (asynchronously)."""
        n = len(jobs)
        bb = pick_bucket(n, self.batch_buckets)
        rows = list(range(n)) + [0] * (bb - n)
        t = self.ts[[jobs[r].step for r in rows]]
        tp = self.ts_prev[[jobs[r].step for r in rows]]
        c = np.stack([jobs[r].cond for r in rows])
        mb = pick_bucket(max(len(j.ids) for j in jobs), self.token_buckets)
        xm = np.zeros((bb, mb, jobs[0].state.shape[-1]), np.float32)
        ids = np.zeros((bb, mb), np.int32)
        valid = np.zeros((bb, mb), np.float32)
        for i, r in enumerate(rows):
            m = len(jobs[r].ids)
            xm[i, :m], ids[i, :m], valid[i, :m] = jobs[r].state, jobs[r].ids, 1.0 if i < n else 0.0
        keep = np.stack([jobs[r].keep for r in rows])
        # cache rows: the prefetched ones (continuing jobs, in order) plus the newcomers
        if prefetched is not None and prefetched[0] == [j.idx for j in jobs[: len(prefetched[0])]]:
            (kp, vp), have = prefetched[1], len(prefetched[0])
        else:
            kp = vp = None
            have = 0
        extra = jobs[have:] + [jobs[0]] * (bb - n)
        (kn, vn), dt = self._load(extra, [j.step for j in extra], fb) if extra else ((None,) * 2, 0)
        t_join = time.perf_counter()
        k = kp if kn is None else (kn if kp is None else np.concatenate([kp, kn]))
        v = vp if vn is None else (vn if vp is None else np.concatenate([vp, vn]))
        self.stats.load_s += dt + time.perf_counter() - t_join
        if not fb:
            return self._masked(xm, ids, valid, t, tp, c, k, v, keep)
        xt = np.stack([jobs[r].templ[jobs[r].step] for r in rows])
        return self._masked(xm, ids, valid, t, tp, c, k, v, keep, xt, full_blocks=fb)

    def _finish(self, job: _Job) -> np.ndarray:
        if self.compute == "full":
            return job.state
        patches = self._patchify(job.cache.xs[-1])
        patches[job.ids] = job.state
        p, g = self.dit.patch, self.dit.grid
        return patches.reshape(g, g, p, p).transpose(0, 2, 1, 3).reshape(g * p, g * p)

    def _patchify(self, img: np.ndarray) -> np.ndarray:
        """(H, W) -> (tokens, patch_dim) on the host, the layout of `DiT.patchify`."""
        p, g = self.dit.patch, self.dit.grid
        return np.ascontiguousarray(
            np.asarray(img, np.float32).reshape(g, p, g, p).transpose(0, 2, 1, 3)
        ).reshape(g * g, p * p)

    # -- serving loop ---------------------------------------------------------------------------
    def admit(self, idx: int, req: EditRequest, arrival: float) -> "_Job":
        """A validated request as a running job (builds the template cache on first use)."""
        return self._admit(idx, req, arrival)

    def advance(self, running: list["_Job"], prefetched=None):
        """One denoising step of every running job: returns (still running, finished as
        (job, output image) pairs, the prefetched cache rows for the next call)."""
        prefetched = self._step(running, prefetched)
        self.stats.steps += 1
        self.stats.rows += len(running)
        for j in running:
            j.step += 1
        done = [(j, self._finish(j)) for j in running if j.step == self.steps]
        return [j for j in running if j.step < self.steps], done, prefetched

    def run(self, arrivals: Sequence[tuple[float, EditRequest]]):
        """Serve `(arrival seconds, request)` pairs on the real clock; returns per-request
        `(latency seconds, output image)` in input order."""
        for _, req in arrivals:
            self.validate(req)
        order = sorted(range(len(arrivals)), key=lambda i: arrivals[i][0])
        pending = collections.deque(order)
        waiting: collections.deque[int] = collections.deque()
        running: list[_Job] = []
        results: list = [None] * len(arrivals)
        prefetched = None
        t0 = time.perf_counter()
        while pending or waiting or running:
            now = time.perf_counter() - t0
            while pending and arrivals[pending[0]][0] <= now:
                waiting.append(pending.popleft())
            if self.batching == "continuous" or not running:
                while waiting and len(running) < self.max_batch:
                    i = waiting.popleft()
                    running.append(self._admit(i, arrivals[i][1], arrivals[i][0]))
            if not running:
                if pending:
                    time.sleep(max(0.0, arrivals[pending[0]][0] - now))
                continue
            running, done, prefetched = self.advance(running, prefetched)
            if done:
                end = time.perf_counter() - t0
                for j, image in done:
                    results[j.idx] = (end - j.arrival, image)
        return results
