"""Online editing service: an `EditEngine` driven by an asyncio loop, for the HTTP API.

`EditService.submit` validates a request on the caller's side (ValueError / KeyError naming the
field), refuses it with `Overloaded` when `queue_limit` requests already wait, or with
`ShuttingDown` when the service is stopping, and otherwise returns an `EditJob` whose future
completes with the edited image or fails explicitly; nothing accepted is dropped. The engine
runs in one worker thread, one denoising step per call: between steps waiting requests join
the running batch (continuous batching) and finished ones leave.

Uploaded templates: with `uploads` (a `template_builder`), `submit(req, image=...)` and
`upload(image)` accept a template image instead of a registered id. The image is validated
(shape, finite, in the model's range [-1, 1]) and content-addressed (`image_template_id`: a
digest of its bytes and the weights version), so the same image uploaded again maps to the same
id and reuses the cached activations; the cache is built on the first edit that uses it.
"""

import asyncio
import collections
import concurrent.futures
import dataclasses
import itertools
import time
import uuid
from collections.abc import Callable

import jax
import numpy as np

from ._editing import TemplateCache, build_template_cache
from ._models import NULL_LABEL
from ._requests import Overloaded, ShuttingDown, fail_future, wait_settled
from ._step_batching import EditEngine, EditRequest
from ._template_store import image_template_id


def template_builder(dit, encode, schedule, *, label: int = NULL_LABEL, seed: int = 0):
    """How an uploaded image becomes a template cache: `build(image, *, steps, version)` runs
    the template's full pass (`build_template_cache`) under condition `label` (by default the
    null label: an upload carries no class) with the noise of `jax.random.key(seed)`."""

    def build(image: np.ndarray, *, steps: int, version: str) -> TemplateCache:
        return build_template_cache(
            dit,
            encode,
            schedule,
            image,
            label,
            steps=steps,
            key=jax.random.key(seed),
            version=version,
        )

    return build


@dataclasses.dataclass(eq=False)
class EditJob:
    id: str
    request: EditRequest
    arrival: float
    future: asyncio.Future
    status: str = "queued"  # queued -> running -> done | failed
    output: np.ndarray | None = None
    error: str | None = None
    finished: float | None = None
    idx: int = 0

    @property
    def latency(self) -> float | None:
        return None if self.finished is None else self.finished - self.arrival


class EditService:
    """Serves `EditRequest`s online on one `EditEngine` (one worker = one thread)."""

    def __init__(
        self,
        engine: EditEngine,
        *,
        queue_limit: int = 64,
        keep_results: int = 10_000,
        uploads: Callable[..., TemplateCache] | None = None,
    ):
        if queue_limit < 1:
            raise ValueError(f"queue_limit: expected >= 1, got {queue_limit}")
        self.engine, self.queue_limit, self._keep = engine, queue_limit, keep_results
        self.uploads = uploads
        self._waiting: collections.deque[EditJob] = collections.deque()
        self._jobs: dict[str, EditJob] = {}
        self._by_idx: dict[int, EditJob] = {}
        self._done_order: collections.deque[str] = collections.deque()
        self._inflight: set[EditJob] = set()
        self._running: list = []  # engine jobs; touched only by the worker thread
        self._prefetched = None
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._closing = True
        self._step_ewma = 0.0
        self.counts: dict[str, int] = collections.defaultdict(int)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("edit service already started")
        self._wake, self._closing = asyncio.Event(), False
        self._pool = concurrent.futures.ThreadPoolExecutor(1)
        self._task = asyncio.create_task(self._loop())

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests (`ShuttingDown`) and wait up to `timeout_s` seconds for the
        accepted ones to finish; True when none is left. `stop` fails the rest."""
        self._closing = True
        await wait_settled([job.future for job in self._inflight], timeout_s)
        return not self._inflight

    async def stop(self) -> None:
        """Stop serving; every accepted request not finished fails with `ShuttingDown`."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for job in list(self._inflight):
            self._fail(job, "server shutting down", ShuttingDown("server shutting down"))
        self._waiting.clear()
        self._running, self._prefetched = [], None

    # -- submission ------------------------------------------------------------------------
    @property
    def templates(self) -> list[str]:
        return sorted(self.engine.store.template_ids)

    def get(self, job_id: str) -> EditJob | None:
        return self._jobs.get(job_id)

    def queue_depth(self) -> int:
        return len(self._waiting)

    def retry_after(self) -> float:
        """Seconds until a queue slot is likely free (the head batch's remaining steps)."""
        rounds = 1 + len(self._waiting) // self.engine.max_batch
        return max(0.05, rounds * self.engine.steps * self._step_ewma)

    def validate_image(self, image) -> np.ndarray:
        """An uploaded template image as float32 (H, W); ValueError naming `image` otherwise."""
        size = self.engine.dit.image_size
        img = np.asarray(image)
        if img.dtype.kind not in "iuf":
            raise ValueError(f"image: expected numbers, got dtype {img.dtype}")
        if img.shape != (size, size):
            raise ValueError(f"image: expected shape ({size}, {size}), got {img.shape}")
        img = img.astype(np.float32)
        if not np.all(np.isfinite(img)):
            raise ValueError("image: values must be finite (got NaN or infinity)")
        if img.min() < -1 or img.max() > 1:
            raise ValueError(
                f"image: values must be in [-1, 1] (the model's range), "
                f"got [{img.min():.4g}, {img.max():.4g}]"
            )
        return img

    def upload(self, image) -> tuple[str, bool]:
        """Register an uploaded template image under its content address; returns (template
        id, True when new). A known image keeps its id and its cached activations."""
        tid, new = self._register(image)
        self.counts["uploads_new" if new else "uploads_known"] += 1
        return tid, new

    def _register(self, image) -> tuple[str, bool]:
        if self.uploads is None:
            raise ValueError("image: this service takes no uploaded templates (no `uploads`)")
        img = self.validate_image(image)
        store = self.engine.store
        tid = image_template_id(img, store.version)
        steps, build = self.engine.steps, self.uploads
        new = store.register(
            tid, lambda: build(img, steps=steps, version=store.version), upload=True
        )
        return tid, new

    def submit(self, req: EditRequest, *, image=None) -> EditJob:
        """Queue `req`; with `image` (an uploaded template, `req.template` empty) the request
        edits that image, registered under its content address (`req.template` of the job)."""
        if self._closing:
            raise ShuttingDown("edit service is not running")
        if image is None:
            self.engine.validate(req)
        else:
            if req.template:
                raise ValueError("template, image: give exactly one")
            tid, new = self._register(image)
            req = dataclasses.replace(req, template=tid)
            try:
                self.engine.validate(req)
            except Exception:
                if new:  # an invalid request leaves no upload behind
                    self.engine.store.forget(tid)
                raise
            self.counts["uploads_new" if new else "uploads_known"] += 1
        if len(self._waiting) >= self.queue_limit:
            self.counts["rejected"] += 1
            raise Overloaded(
                f"edit queue full ({len(self._waiting)} waiting)", retry_after=self.retry_after()
            )
        job = EditJob(
            id=uuid.uuid4().hex,
            request=req,
            arrival=time.perf_counter(),
            future=asyncio.get_running_loop().create_future(),
            idx=next(self._seq),
        )
        self._jobs[job.id] = job
        self._by_idx[job.idx] = job
        self._inflight.add(job)
        self._waiting.append(job)
        self.counts["accepted"] += 1
        self._wake.set()
        return job

    # -- completion ------------------------------------------------------------------------
    def _complete(self, job: EditJob, image: np.ndarray) -> None:
        job.status, job.output, job.finished = "done", image, time.perf_counter()
        self._retire(job)
        if not job.future.done():
            job.future.set_result(image)

    def _fail(self, job: EditJob, message: str, exc: Exception) -> None:
        if job.status in ("done", "failed"):
            return
        job.status, job.error, job.finished = "failed", message, time.perf_counter()
        self._retire(job)
        fail_future(job.future, exc)

    def _retire(self, job: EditJob) -> None:
        self._inflight.discard(job)
        self._by_idx.pop(job.idx, None)
        self.counts[job.status] += 1
        self._done_order.append(job.id)
        while len(self._done_order) > self._keep:
            self._jobs.pop(self._done_order.popleft(), None)

    # -- the serving loop ------------------------------------------------------------------
    def _tick(self, new: list[EditJob]):
        """Worker thread: admit `new`, run one step. Returns (finished, failed admissions)."""
        failed = []
        for job in new:
            try:
                self._running.append(self.engine.admit(job.idx, job.request, job.arrival))
            except Exception as e:  # noqa: BLE001 - reported to that request only
                failed.append((job, f"{type(e).__name__}: {e}"))
        if not self._running:
            return [], failed
        t0 = time.perf_counter()
        try:
            self._running, done, self._prefetched = self.engine.advance(
                self._running, self._prefetched
            )
        except Exception as e:  # noqa: BLE001 - the whole batch fails explicitly
            lost = [(j.idx, f"engine step failed: {type(e).__name__}: {e}") for j in self._running]
            self._running, self._prefetched = [], None
            return [], failed + [(idx, msg) for idx, msg in lost]
        dt = time.perf_counter() - t0
        self._step_ewma = dt if self._step_ewma == 0 else 0.8 * self._step_ewma + 0.2 * dt
        return [(j.idx, image) for j, image in done], failed

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting and not self._running:
                self._wake.clear()
                await self._wake.wait()
                continue
            new = []
            if self.engine.batching == "continuous" or not self._running:
                while self._waiting and len(self._running) + len(new) < self.engine.max_batch:
                    job = self._waiting.popleft()
                    job.status = "running"
                    new.append(job)
            done, failed = await loop.run_in_executor(self._pool, self._tick, new)
            for idx, image in done:
                if idx in self._by_idx:
                    self._complete(self._by_idx[idx], image)
            for who, msg in failed:
                job = who if isinstance(who, EditJob) else self._by_idx.get(who)
                if job is not None:
                    self._fail(job, msg, RuntimeError(msg))
