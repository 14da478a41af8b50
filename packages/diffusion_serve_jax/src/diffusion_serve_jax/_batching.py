"""How many queued rows a free device takes, and whether it should wait for more.

One policy for the runtime and the simulator. Without a measured profile (`policy=None`) a
device takes the largest bucket that the queue fills (`batch_size_for`), leaving the rest to
other free devices: a queue of 15 with buckets (1, 4, 16) becomes batches of 4, 4, 4, 1, 1, 1.
That spreads work where a batch costs about its rows (a CPU), and wastes devices where a batch
of 16 costs about one row (a GPU): every fragment costs a whole batch.

`BatchPolicy` decides from the per-bucket profile of the queue's key (a model in micro-serving,
a whole workflow in monolithic serving; `key_profiles`):

- *take*: the whole queue (up to `max_batch`, padded to the next bucket) when that one batch
  costs no more device time than the fragments of the split; otherwise the split's first
  fragment. Where cost is proportional to rows this is exactly `batch_size_for`.
- *wait*: when a full batch (the largest bucket <= `max_batch`) costs at most `cheap_ratio`
  times the smallest bucket and the queue holds less than that, a device waits for more rows,
  but no item waits beyond `max_delay_s` after it was queued, nor past its deadline minus the
  full batch's time (the SLO slack bounds the delay). Where batching is not cheap it never
  waits.
"""

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

from ._executor import pick_bucket


def batch_size_for(queued: int, buckets, max_batch: int) -> int:
    """Rows to take from a queue of `queued`: the largest bucket <= min(queued, max_batch),
    or everything (padded) when the queue is shorter than the smallest bucket."""
    cap = min(queued, max_batch)
    fits = [b for b in buckets if b <= cap]
    return max(fits) if fits else cap


def bucket_time(profile: Mapping[int, float], n: int) -> float:
    """Seconds of one batch of n <= max(profile) rows (padded to the next bucket)."""
    return profile[pick_bucket(n, sorted(profile))]


class BatchPolicy(NamedTuple):
    """Profile-driven batching (module docstring). `profiles`: model -> {bucket: seconds};
    `max_delay_s`: the longest an item may wait for a fuller batch, one number or per queue
    key (model in micro mode, workflow in monolithic mode; missing keys never wait);
    `cheap_ratio`: wait only where a full batch costs at most this many smallest batches."""

    profiles: Mapping[str, Mapping[int, float]]
    max_delay_s: float | Mapping[str, float] = 0.0
    cheap_ratio: float = 2.0

    def delay(self, key: str) -> float:
        if isinstance(self.max_delay_s, Mapping):
            return float(self.max_delay_s.get(key, 0.0))
        return float(self.max_delay_s)


def check_policy(policy: BatchPolicy, models) -> None:
    """Validate on the host: profiles for every served model, non-negative delays."""
    if not isinstance(policy, BatchPolicy):
        raise TypeError(f"batching: expected a BatchPolicy, got {type(policy).__name__}")
    missing = sorted(set(models) - set(policy.profiles))
    if missing:
        raise ValueError(f"batching.profiles: no per-bucket profile for models {missing}")
    for m, prof in policy.profiles.items():
        if not prof or any(not (t >= 0 and math.isfinite(t)) for t in prof.values()):
            raise ValueError(
                f"batching.profiles[{m!r}]: expected {{bucket: seconds >= 0}}, got {dict(prof)}"
            )
    delays = (
        policy.max_delay_s.values()
        if isinstance(policy.max_delay_s, Mapping)
        else [policy.max_delay_s]
    )
    if any(not d >= 0 for d in delays):
        raise ValueError(f"batching.max_delay_s: expected seconds >= 0, got {policy.max_delay_s}")
    if not policy.cheap_ratio >= 1:
        raise ValueError(f"batching.cheap_ratio: expected >= 1, got {policy.cheap_ratio}")


def key_profiles(policy: BatchPolicy, mode: str, workflows) -> dict[str, dict[int, float]]:
    """{queue key: {bucket: seconds}}: each model's profile (micro) or, for a workflow
    (monolithic), the sum of its nodes' times at the buckets that all of them have."""
    if mode == "micro":
        return {m: dict(p) for m, p in policy.profiles.items()}
    out = {}
    for w, cw in workflows.items():
        models = [cw.node(n).model for n in cw.order]
        common = sorted(set.intersection(*(set(policy.profiles[m]) for m in models)))
        out[w] = {b: sum(policy.profiles[m][b] for m in models) for b in common}
    return out


def split_sizes(queued: int, buckets, max_batch: int) -> list[int]:
    """The batches that repeated `batch_size_for` makes of a queue of `queued` (at most
    `max_batch` rows in all: what one device could take at once)."""
    left, out = min(queued, max_batch), []
    while left > 0:
        n = batch_size_for(left, buckets, max_batch)
        out.append(n)
        left -= n
    return out


def take_rows(profile: Mapping[int, float], queued: int, max_batch: int) -> int:
    """Rows a device takes now: the whole queue when one padded batch costs no more device
    time than the split into buckets, else the split's first fragment."""
    buckets = sorted(profile)
    cap = min(queued, max_batch, buckets[-1])
    split = split_sizes(cap, buckets, max_batch)
    if bucket_time(profile, cap) <= sum(bucket_time(profile, n) for n in split):
        return cap
    return split[0]


class Planner:
    """`plan_batch` for a fixed set of queue keys: each key's profile constants and take
    sizes are computed once (the simulator and the runtime ask on every event)."""

    def __init__(self, policy, profiles_by_key, buckets_of, max_batch: int):
        self.max_batch, self.buckets_of = max_batch, buckets_of
        self._consts, self._take = {}, {}
        if policy is None:
            return
        for k, prof in profiles_by_key.items():
            full = max([b for b in prof if b <= max_batch] or [min(prof)])
            t_full = bucket_time(prof, full)
            cheap = t_full <= policy.cheap_ratio * prof[min(prof)]
            delay = policy.delay(k)
            self._consts[k] = (prof, full, t_full, cheap and delay > 0, delay)

    def plan(self, key, queued: int, now: float, stamps) -> tuple[int, float]:
        """(rows to take now, 0 to wait; the time to decide again, inf if not waiting)."""
        c = self._consts.get(key)
        cap = min(queued, self.max_batch)
        if c is not None and queued > 0:
            prof, full, t_full, waits, delay = c
            if waits and queued < full:
                oldest, earliest = stamps()
                wake = min(oldest + delay, earliest - t_full)
                if now < wake:
                    return 0, wake
        n = self._take.get((key, cap))
        if n is None:
            if c is None or cap <= 0:
                n = batch_size_for(cap, self.buckets_of[key], self.max_batch)
            else:
                n = take_rows(c[0], cap, self.max_batch)
            self._take[(key, cap)] = n
        return n, math.inf


def plan_batch(
    policy: BatchPolicy | None,
    profile: Mapping[int, float] | None,
    key: str,
    queued: int,
    buckets,
    max_batch: int,
    now: float,
    stamps: Callable[[], tuple[float, float]],
) -> tuple[int, float]:
    """(rows to take now, 0 to wait; the time to decide again, inf if not waiting).

    `stamps()` gives the queue's (oldest enqueue time, earliest deadline); it is called only
    when waiting is possible (a short queue of a key whose batching is cheap). Without a
    policy or a profile this is `batch_size_for`."""
    profiles = {} if profile is None else {key: profile}
    return Planner(policy, profiles, {key: buckets}, max_batch).plan(key, queued, now, stamps)
