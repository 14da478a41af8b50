"""A discrete-event simulator of both serving modes, calibrated on measured node profiles.

It replays the runtime's policies (per-model queues ordered by deadline and workers choosing
the most urgent model with load-following replica counts, vs. per-workflow replicas running
the whole DAG) with service times taken from `NodeExecutor.profile` measurements. Devices are
either dedicated (`cores=None`: each worker is its own accelerator, the cluster-scale case) or
share `cores` processors (processor sharing: k concurrent batches each run at min(1, cores/k)
speed, how worker threads share a CPU).
"""

import dataclasses
import heapq
import math
from collections.abc import Mapping, Sequence

import numpy as np

from ._executor import pick_bucket
from ._runtime import batch_size_for
from ._workflow import CompiledWorkflow


def batch_time(profile: Mapping[int, float], n: int) -> float:
    """Seconds for a batch of n rows from a {bucket: seconds} profile (chunks above the max)."""
    buckets = sorted(profile)
    top = buckets[-1]
    full, rest = divmod(n, top)
    t = full * profile[top]
    return t + (profile[pick_bucket(rest, buckets)] if rest else 0.0)


@dataclasses.dataclass
class _Req:
    idx: int
    wf: CompiledWorkflow
    arrival: float
    deadline: float
    remaining: dict
    left: int
    done: float = math.inf


def simulate(
    workflows: Mapping[str, CompiledWorkflow],
    profiles: Mapping[str, Mapping[int, float]],
    arrivals: Sequence[tuple[float, str]],
    *,
    mode: str,
    num_workers: int,
    max_batch: int,
    slo_s: Mapping[str, float],
    replicas: Mapping[str, int] | None = None,
    queue_limit: int = 10**9,
    cores: float | None = None,
    overhead_s: float = 0.0,
    request_overhead_s: float = 0.0,
) -> np.ndarray:
    """Latency (seconds; inf if rejected) of each arrival `(time, workflow)`.

    `overhead_s` is added to every batch's device time; `request_overhead_s` to every served
    request's latency (time outside the devices: network, parsing).
    """
    if mode not in ("micro", "monolithic"):
        raise ValueError(f"mode: expected 'micro' or 'monolithic', got {mode!r}")
    names = sorted(workflows)
    if mode == "monolithic" and replicas is None:
        if num_workers < len(names):
            raise ValueError(
                f"num_workers: need one per workflow ({len(names)}), got {num_workers}"
            )
        base, extra = divmod(num_workers, len(names))
        replicas = {w: base + (i < extra) for i, w in enumerate(names)}
    models = sorted({n.model for w in workflows.values() for n in w.workflow.nodes})
    missing = sorted(set(models) - set(profiles))
    if missing:
        raise ValueError(f"profiles: no measurement for models {missing}")
    queues: dict[str, list] = {k: [] for k in (models if mode == "micro" else names)}
    if mode == "micro":
        buckets_of = {m: tuple(sorted(profiles[m])) for m in models}
    else:
        buckets_of = {
            w: tuple(
                sorted(
                    set.intersection(*(set(profiles[n.model]) for n in workflows[w].workflow.nodes))
                )
            )
            for w in names
        }
    seq = 0
    lat = np.full(len(arrivals), np.inf)
    active: dict[str, int] = {k: 0 for k in queues}
    # workers: micro -> num_workers generic; mono -> (workflow) owners
    owners = (
        [None] * num_workers if mode == "micro" else [w for w in names for _ in range(replicas[w])]
    )
    free = list(range(len(owners)))
    running: list[list] = []  # [remaining_work, worker, key, items]
    order = sorted(range(len(arrivals)), key=lambda i: arrivals[i][0])
    next_arrival = 0
    now = 0.0

    def push(key, req, node):
        nonlocal seq
        heapq.heappush(queues[key], (req.deadline, seq, req, node))
        seq += 1

    def service(key, n):
        if mode == "micro":
            return batch_time(profiles[key], n) + overhead_s
        wf = workflows[key]
        return sum(batch_time(profiles[wf.node(x).model], n) for x in wf.order) + overhead_s

    def dispatch():
        progress = True
        while progress and free:
            progress = False
            for wi in list(free):
                if mode == "micro":
                    cands = [k for k, q in queues.items() if q]
                    if not cands:
                        continue
                    key = min(cands, key=lambda k: queues[k][0][:2])
                else:
                    key = owners[wi]
                    if not queues[key]:
                        continue
                n = batch_size_for(len(queues[key]), buckets_of[key], max_batch)
                items = [heapq.heappop(queues[key]) for _ in range(n)]
                free.remove(wi)
                active[key] += 1
                running.append([service(key, len(items)), wi, key, items])
                progress = True

    def speed():
        k = len(running)
        return 1.0 if cores is None or k <= cores else cores / k

    while next_arrival < len(order) or running:
        t_arr = arrivals[order[next_arrival]][0] if next_arrival < len(order) else math.inf
        s = speed()
        t_done = now + min(r[0] for r in running) / s if running else math.inf
        t_next = min(t_arr, t_done)
        for r in running:
            r[0] -= (t_next - now) * s
        now = t_next
        if t_done <= t_arr:
            fin = [r for r in running if r[0] <= 1e-12]
            for r in fin:
                running.remove(r)
                _, wi, key, items = r
                free.append(wi)
                active[key] -= 1
                for _, _, req, node in items:
                    if mode == "micro":
                        req.left -= 1
                        for child in req.wf.children[node]:
                            req.remaining[child] -= 1
                            if req.remaining[child] == 0:
                                push(req.wf.node(child).model, req, child)
                        if req.left == 0:
                            lat[req.idx] = now - req.arrival
                    else:
                        lat[req.idx] = now - req.arrival
        else:
            i = order[next_arrival]
            next_arrival += 1
            t, w = arrivals[i]
            wf = workflows[w]
            req = _Req(
                i, wf, t, t + slo_s[w], {n: len(d) for n, d in wf.deps.items()}, len(wf.order)
            )
            if mode == "micro":
                keys = {wf.node(n).model for n in wf.order}
                if max(len(queues[k]) for k in keys) >= queue_limit:
                    continue
                for n in wf.order:
                    if not wf.deps[n]:
                        push(wf.node(n).model, req, n)
            else:
                if len(queues[w]) >= queue_limit:
                    continue
                push(w, req, None)
        dispatch()
    return lat + request_overhead_s
