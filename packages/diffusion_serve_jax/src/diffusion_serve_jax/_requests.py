"""Requests, refusals and counters shared by the serving runtime, its workers and the HTTP
server: an accepted `Request` either completes or fails explicitly; a refused one raises
`Overloaded` (HTTP 429 with a retry hint) or `ShuttingDown` (503)."""

import asyncio
import dataclasses
from collections import defaultdict, deque

import numpy as np

from ._workflow import CompiledWorkflow


def fail_future(future: asyncio.Future, exc: Exception) -> None:
    """Fail `future` once, marking the exception retrieved: its waiter may have gone away."""
    if not future.done():
        future.set_exception(exc)
        future.exception()


async def wait_settled(futures: list[asyncio.Future], timeout_s: float) -> None:
    """Wait up to `timeout_s` seconds for `futures` to settle (drain of a stopping service)."""
    if futures and timeout_s > 0:
        await asyncio.wait(futures, timeout=timeout_s)


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


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclasses.dataclass
class RuntimeStats:
    requests: dict = dataclasses.field(default_factory=lambda: defaultdict(int))
    batches: dict = dataclasses.field(default_factory=lambda: defaultdict(int))
    batch_rows: dict = dataclasses.field(default_factory=lambda: defaultdict(int))
    latency_sum: float = 0.0
    latency_count: int = 0
    latency_buckets: dict = dataclasses.field(default_factory=lambda: defaultdict(int))
    loads: int = 0  # model (micro) or workflow-replica (mono) loads under a memory budget
    load_seconds: float = 0.0
    swaps: int = 0  # batches a hot-swapping monolithic replica swapped adapter weights for
    swap_seconds: float = 0.0
    waits: int = 0  # times a queue held back for a fuller batch (`BatchPolicy`)
    splits: dict = dataclasses.field(default_factory=lambda: defaultdict(int))  # per model
    scale_ups: dict = dataclasses.field(default_factory=lambda: defaultdict(int))  # per key
    scale_downs: dict = dataclasses.field(default_factory=lambda: defaultdict(int))
    # (time, key, old, new) of the latest replica-count changes (autoscaling)
    scale_events: deque = dataclasses.field(default_factory=lambda: deque(maxlen=1000))

    def record(self, req: Request) -> None:
        self.requests[(req.workflow.name, req.status)] += 1
        lat = req.latency or 0.0
        self.latency_sum += lat
        self.latency_count += 1
        for b in LATENCY_BUCKETS:
            if lat <= b:
                self.latency_buckets[b] += 1


def metrics_text(
    stats: RuntimeStats,
    queue_depths: dict[str, int],
    inflight: int,
    replicas: dict[str, int] | None = None,
    label: str = "model",
) -> str:
    """Prometheus text exposition of counters, queue depths, replica counts (`label`:
    model or workflow), scaling events and the latency histogram."""
    lines = ["# TYPE diffusion_requests_total counter"]
    for (w, s), n in sorted(stats.requests.items()):
        lines.append(f'diffusion_requests_total{{workflow="{w}",status="{s}"}} {n}')
    lines.append("# TYPE diffusion_queue_depth gauge")
    for k, n in sorted(queue_depths.items()):
        lines.append(f'diffusion_queue_depth{{queue="{k}"}} {n}')
    lines.append("# TYPE diffusion_batches_total counter")
    for k, n in sorted(stats.batches.items()):
        lines.append(f'diffusion_batches_total{{queue="{k}"}} {n}')
        lines.append(f'diffusion_batch_rows_total{{queue="{k}"}} {stats.batch_rows[k]}')
    lines.append("# TYPE diffusion_loads_total counter")
    lines.append(f"diffusion_loads_total {stats.loads}")
    lines.append("# TYPE diffusion_swaps_total counter")
    lines.append(f"diffusion_swaps_total {stats.swaps}")
    lines.append("# TYPE diffusion_batch_waits_total counter")
    lines.append(f"diffusion_batch_waits_total {stats.waits}")
    lines.append("# TYPE diffusion_split_batches_total counter")
    for m, n in sorted(stats.splits.items()):
        lines.append(f'diffusion_split_batches_total{{model="{m}"}} {n}')
    lines.append("# TYPE diffusion_replicas gauge")
    for k, n in sorted((replicas or {}).items()):
        lines.append(f'diffusion_replicas{{{label}="{k}"}} {n}')
    lines.append("# TYPE diffusion_scaling_events_total counter")
    for direction, counts in (("up", stats.scale_ups), ("down", stats.scale_downs)):
        for k, n in sorted(counts.items()):
            lines.append(
                f'diffusion_scaling_events_total{{{label}="{k}",direction="{direction}"}} {n}'
            )
    lines.append("# TYPE diffusion_inflight gauge")
    lines.append(f"diffusion_inflight {inflight}")
    lines.append("# TYPE diffusion_latency_seconds histogram")
    for b in LATENCY_BUCKETS:
        lines.append(f'diffusion_latency_seconds_bucket{{le="{b}"}} {stats.latency_buckets[b]}')
    lines.append(f'diffusion_latency_seconds_bucket{{le="+Inf"}} {stats.latency_count}')
    lines.append(f"diffusion_latency_seconds_sum {stats.latency_sum:.6f}")
    lines.append(f"diffusion_latency_seconds_count {stats.latency_count}")
    return "\n".join(lines) + "\n"
