"""A discrete-event simulator of both serving modes, calibrated on measured node profiles.

It replays the runtime's policies (per-model queues ordered by deadline and workers choosing
the most urgent model with load-following replica counts, vs. per-workflow replicas running
the whole DAG) with service times taken from `NodeExecutor.profile` measurements. Devices are
either dedicated (`cores=None`: each worker is its own accelerator, the cluster-scale case) or
share `cores` processors (processor sharing: k concurrent batches each run at min(1, cores/k)
speed, how worker threads share a CPU).

Device memory (`memory_bytes`, with `model_bytes` and measured `load_s` per model): a device
holds what fits and pays the load time of whatever it must bring in (least recently used
residents are evicted). The unit a device holds is a *model* in micro-serving (one instance
shared by every workflow that uses it) and a whole *workflow replica* in monolithic serving
(its own copy of each of its models, loaded together). Both modes then use the same
work-conserving policy on every device: serve the most urgent queue among the keys it holds;
a device with nothing of its own to do loads (scales out) the key whose head deadline plus load
time is earliest, unless an idle device holds that key or a busy holder frees up sooner than
the load would finish. Device d starts holding workflow d's models (or replica), then fills
its memory with the other keys in turn.

The hot-swapping monolith (`mode="hot_swap"`, the runtime's `variants` / `variant_loader`
monolith, `_swap_workers`): every device holds one copy of the base models and serves any
workflow, one workflow's requests per batch; workflow w needs variant `variants[w][m]` of
model m (absent: the base weights), and a device whose held variant of m differs pays
`swap_s[m]` before the batch. A device takes the most urgent queue it can serve without a
swap, else the most urgent queue that no idle device holds (the runtime's `_pick_swap`).
"""

import dataclasses
import heapq
import math
from collections.abc import Mapping, Sequence

import numpy as np

from ._batching import BatchPolicy, Planner, check_policy, key_profiles
from ._executor import pick_bucket
from ._residency import DeviceMemory, initial_placement
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
    memory_bytes: float | None = None,
    model_bytes: Mapping[str, float] | None = None,
    load_s: Mapping[str, float] | None = None,
    batching: BatchPolicy | None = None,
    variants: Mapping[str, Mapping[str, str]] | None = None,
    swap_s: Mapping[str, float] | float | None = None,
    with_stats: bool = False,
):
    """Latency (seconds; inf if rejected) of each arrival `(time, workflow)`.

    `overhead_s` is added to every batch's device time; `request_overhead_s` to every served
    request's latency (time outside the devices: network, parsing). With `memory_bytes`
    (per device; needs `model_bytes` and `load_s` for every model) devices load and evict
    models as described in the module docstring, and monolithic replicas are no longer pinned
    to one workflow. `batching` replaces the bucket-filling dispatch with the profile-driven
    `BatchPolicy` (take the whole queue where that is cheaper, wait for a fuller batch within
    a bound; `_batching`). `mode="hot_swap"` needs `variants` (workflow -> {model: variant})
    and `swap_s` (seconds per swapped model: one number, or per model); see the module
    docstring. `with_stats=True` returns `(latencies, {"loads", "load_s", "swaps",
    "swap_s"})` (`swaps`: batches that swapped).
    """
    if mode not in ("micro", "monolithic", "hot_swap"):
        raise ValueError(f"mode: expected 'micro', 'monolithic' or 'hot_swap', got {mode!r}")
    names = sorted(workflows)
    models = sorted({n.model for w in workflows.values() for n in w.workflow.nodes})
    missing = sorted(set(models) - set(profiles))
    if missing:
        raise ValueError(f"profiles: no measurement for models {missing}")
    wf_models = {w: sorted({n.model for n in workflows[w].workflow.nodes}) for w in names}
    swap_cost = _check_swap(mode, variants, swap_s, memory_bytes, wf_models, models)
    if memory_bytes is not None:
        if not memory_bytes > 0:
            raise ValueError(f"memory_bytes: expected a positive budget, got {memory_bytes}")
        for arg, d in (("model_bytes", model_bytes), ("load_s", load_s)):
            lacking = sorted(set(models) - set(d or {}))
            if lacking:
                raise ValueError(f"{arg}: with memory_bytes, need every model; missing {lacking}")
    pinned = mode == "monolithic" and memory_bytes is None
    held = [{} for _ in range(num_workers)] if mode == "hot_swap" else []  # model -> variant
    swaps = [0, 0.0]
    if pinned and replicas is None:
        if num_workers < len(names):
            raise ValueError(
                f"num_workers: need one per workflow ({len(names)}), got {num_workers}"
            )
        base, extra = divmod(num_workers, len(names))
        replicas = {w: base + (i < extra) for i, w in enumerate(names)}
    keys = models if mode == "micro" else names
    kprof = {}
    if batching is not None:
        check_policy(batching, models)
        kprof = key_profiles(batching, "micro" if mode == "micro" else "monolithic", workflows)
    queues: dict[str, list] = {k: [] for k in keys}
    if mode == "micro":
        buckets_of = {m: tuple(sorted(profiles[m])) for m in models}
        size = dict(model_bytes or {})
        load = dict(load_s or {})
    else:
        buckets_of = {
            w: tuple(sorted(set.intersection(*(set(profiles[m]) for m in wf_models[w]))))
            for w in names
        }
        size = {w: sum(model_bytes[m] for m in wf_models[w]) for w in names} if model_bytes else {}
        load = {w: sum(load_s[m] for m in wf_models[w]) for w in names} if load_s else {}
    owners = [w for w in names for _ in range(replicas[w])] if pinned else [None] * num_workers
    placement = initial_placement(
        "micro" if mode == "micro" else "monolithic", names, wf_models, len(owners)
    )
    mem = DeviceMemory(memory_bytes, size, load, placement)
    seq = 0
    lat = np.full(len(arrivals), np.inf)
    free = list(range(len(owners)))
    running: list[list] = []  # [remaining_work, worker, key, items]
    order = sorted(range(len(arrivals)), key=lambda i: arrivals[i][0])
    next_arrival = 0
    now = 0.0
    planner = Planner(batching, kprof, buckets_of, max_batch)
    rows = {k: 0 for k in keys}  # rows each queue would give a device now
    avail: set[str] = set()  # queues with rows > 0
    dirty: set[str] = set()  # queues pushed to since their rows were last planned
    wake_of: dict[str, float] = {}  # queues waiting for a fuller batch -> when to look again

    def push(key, req, node):
        nonlocal seq
        heapq.heappush(queues[key], (req.deadline, seq, req, node, now))
        seq += 1
        dirty.add(key)

    def replan(key):
        """Set `rows[key]`: rows to take from its queue now (0: empty or waiting)."""
        q = queues[key]
        n = 0
        if q:
            n, wake = planner.plan(key, len(q), now, lambda: (min(e[4] for e in q), q[0][0]))
        if n:
            wake_of.pop(key, None)
            avail.add(key)
        else:
            if q:
                wake_of[key] = wake
            else:
                wake_of.pop(key, None)
            avail.discard(key)
        rows[key] = n

    cost: dict[tuple[str, int], float] = {}

    def service(key, n):
        t = cost.get((key, n))
        if t is None:
            if mode == "micro":
                t = batch_time(profiles[key], n) + overhead_s
            else:
                wf = workflows[key]
                t = sum(batch_time(profiles[wf.node(x).model], n) for x in wf.order) + overhead_s
            cost[(key, n)] = t
        return t

    def wants(wi, w):
        """{model: variant} that device `wi` must swap in to serve workflow `w` (hot_swap)."""
        want = variants.get(w, {})
        return {m: want.get(m) for m in wf_models[w] if held[wi].get(m) != want.get(m)}

    def holds(wi, k):
        return not wants(wi, k) if held else mem.holds(wi, k)

    def pick_held(wi):
        """The most urgent queue among the keys this device holds."""
        if owners[wi] is not None:
            return owners[wi] if rows[owners[wi]] else None
        best, best_score = None, None
        for k in avail:
            q = queues[k]
            if holds(wi, k) and (best_score is None or q[0][:2] < best_score):
                best, best_score = k, q[0][:2]
        return best

    def pick_swap(wi):
        """hot_swap, nothing held to do: the most urgent queue no other idle device holds."""
        best, best_score = None, None
        for k in avail:
            q = queues[k]
            if any(holds(d, k) for d in free if d != wi):
                continue  # an idle device holding this variant takes it
            if best_score is None or q[0][:2] < best_score:
                best, best_score = k, q[0][:2]
        return best

    def pick_load():
        """For a device with nothing of its own to do: the most urgent queue that it would
        start sooner by loading than by waiting for a holder (None if none)."""
        s, idle = speed(), set(free)
        best, best_score = None, None
        for k in avail:
            q = queues[k]
            if not idle.isdisjoint(mem.holders[k]):
                continue  # an idle holder takes it
            wait = min((r[0] / s for r in running if r[1] in mem.holders[k]), default=math.inf)
            if wait <= load[k]:
                continue  # a busy holder frees up before a load would finish
            score = (q[0][0] + load[k], q[0][1])
            if best_score is None or score < best_score:
                best, best_score = k, score
        return best

    def start(wi, key):
        items = [heapq.heappop(queues[key]) for _ in range(rows[key])]
        replan(key)
        free.remove(wi)
        work = mem.bring(wi, key) + service(key, len(items))
        if held:
            need = wants(wi, key)
            if need:
                t = sum(swap_cost[m] for m in need)
                held[wi].update(need)
                swaps[0] += 1
                swaps[1] += t
                work += t
        running.append([work, wi, key, items])

    def dispatch():
        for k in dirty.union(wake_of):
            replan(k)
        dirty.clear()
        progress = True
        while progress and free and avail:
            progress = False
            for wi in list(free):
                if not avail:
                    break
                key = pick_held(wi)
                if key is not None:
                    start(wi, key)
                    progress = True
            if held and not progress:
                for wi in list(free):
                    key = pick_swap(wi) if avail else None
                    if key is not None:
                        start(wi, key)
                        progress = True
                continue
            if memory_bytes is None or progress or not free:
                continue
            key = pick_load()  # every free device is idle: the first one loads
            if key is not None:
                start(free[0], key)
                progress = True

    def speed():
        k = len(running)
        return 1.0 if cores is None or k <= cores else cores / k

    while next_arrival < len(order) or running or wake_of:
        timer = min(wake_of.values(), default=math.inf)
        t_arr = arrivals[order[next_arrival]][0] if next_arrival < len(order) else math.inf
        s = speed()
        t_done = now + min(r[0] for r in running) / s if running else math.inf
        t_next = min(t_arr, t_done, max(timer, now))
        for r in running:
            r[0] -= (t_next - now) * s
        now = t_next
        if t_next < min(t_arr, t_done):
            pass  # a batching wait ran out: dispatch below
        elif t_done <= t_arr:
            fin = [r for r in running if r[0] <= 1e-12]
            for r in fin:
                running.remove(r)
                _, wi, key, items = r
                free.append(wi)
                for _, _, req, node, _ in items:
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
                if max(len(queues[k]) for k in wf_models[w]) >= queue_limit:
                    continue
                for n in wf.order:
                    if not wf.deps[n]:
                        push(wf.node(n).model, req, n)
            else:
                if len(queues[w]) >= queue_limit:
                    continue
                push(w, req, None)
        dispatch()
    out = lat + request_overhead_s
    stats = {"loads": mem.loads, "load_s": mem.load_s, "swaps": swaps[0], "swap_s": swaps[1]}
    return (out, stats) if with_stats else out


def _check_swap(mode, variants, swap_s, memory_bytes, wf_models, models) -> dict[str, float]:
    """{model: seconds per swap} for `mode="hot_swap"`, after checking its arguments."""
    if mode != "hot_swap":
        if variants is not None or swap_s is not None:
            raise ValueError(f"variants, swap_s: only with mode='hot_swap', got mode {mode!r}")
        return {}
    if variants is None or swap_s is None:
        raise ValueError("variants, swap_s: mode='hot_swap' needs both")
    if memory_bytes is not None:
        raise ValueError("memory_bytes: not with mode='hot_swap' (a device holds the base models)")
    unknown = sorted(set(variants) - set(wf_models))
    if unknown:
        raise ValueError(f"variants: unknown workflows {unknown}")
    for w, per_model in variants.items():
        extra = sorted(set(per_model) - set(wf_models[w]))
        if extra:
            raise ValueError(f"variants[{w!r}]: models {extra} are not nodes of workflow {w!r}")
    cost = dict.fromkeys(models, swap_s) if isinstance(swap_s, int | float) else dict(swap_s)
    swapped = sorted({m for per_model in variants.values() for m in per_model})
    lacking = sorted(set(swapped) - set(cost))
    if lacking:
        raise ValueError(f"swap_s: no swap time for swapped models {lacking}")
    bad = sorted(m for m, t in cost.items() if not t >= 0)
    if bad:
        raise ValueError(f"swap_s: expected seconds >= 0, got {[cost[m] for m in bad]} for {bad}")
    return cost
