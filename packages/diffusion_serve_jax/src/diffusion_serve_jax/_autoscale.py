"""Per-model autoscaling: how many replicas each model (micro-serving) or workflow
(monolithic serving) should have, from its recent load.

A pure policy in the `(init, update)` style: `autoscaler(...)` returns an `Autoscaler` whose
`init(keys, capacity, now)` and `update(state, loads, now)` are pure functions of a
`ScaleState` (hyperparameters live in the closure). The runtime (`ServingRuntime(autoscale=...)`)
and the Ray backend call `update` every `interval_s` seconds with each key's `KeyLoad` since
the last call and apply the new `ScaleState.replicas`.

The rule, per key, over a sliding window of `window_s` seconds:
- arrival rate `lam` (items queued per second), per-row service time `s` (busy seconds of
  the batches finished in the window over their rows; the last known value when none
  finished), queue length `q`;
- demand in busy replicas: `lam * s` (Little's law) plus `q * s / drain_s` (clear the
  backlog within `drain_s`); target `ceil(demand / target_utilization)`, clamped to
  `[min_replicas, max_replicas]`; an idle key (no arrival in the window, empty queue) gets
  `min_replicas`; a key with work but no measured service time yet gets at least one;
- hysteresis: the replica count is the largest target of the last `down_delay_s` seconds, so
  it rises at once and falls only after the load has stayed lower for `down_delay_s`
  (constant load gives a constant count: no flapping);
- capacity: when the counts sum to more than `capacity` (devices, actors), every key keeps
  its minimum and the rest is shared in proportion to what each asked beyond it (rounded
  down, so a key's count never falls when only its own load rises).
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple


class KeyLoad(NamedTuple):
    """One key's load since the last update: items queued (`arrivals`), the queue length
    now (`queued`), and the busy seconds and rows of the batches finished (`busy_s`, `rows`)."""

    arrivals: int = 0
    queued: int = 0
    busy_s: float = 0.0
    rows: int = 0


class ScaleState(NamedTuple):
    keys: tuple[str, ...]
    capacity: int
    replicas: tuple[int, ...]
    samples: tuple[tuple[tuple[float, int, float, int], ...], ...]  # (t, arrivals, busy, rows)
    row_s: tuple[float | None, ...]  # last measured seconds per row
    advice: tuple[tuple[tuple[float, int], ...], ...]  # (t, target) within down_delay_s


class Autoscaler(NamedTuple):
    init: Callable[[Sequence[str], int, float], ScaleState]
    update: Callable[[ScaleState, Mapping[str, KeyLoad], float], ScaleState]
    interval_s: float
    min_replicas: int
    max_replicas: int


def target_replicas(
    rate: float,
    queued: int,
    row_s: float | None,
    *,
    min_replicas: int,
    max_replicas: int,
    target_utilization: float,
    drain_s: float,
) -> int:
    """Replicas one key needs for `rate` items/s, `queued` waiting, `row_s` s per row."""
    if rate <= 0 and queued <= 0:
        return min_replicas
    if row_s is None:
        return min(max(min_replicas, 1), max_replicas)
    demand = rate * row_s + queued * row_s / drain_s
    need = math.ceil(demand / target_utilization - 1e-9)
    return min(max(need, min_replicas, 1), max_replicas)


def share_capacity(wanted: Sequence[int], capacity: int, min_replicas: int) -> tuple[int, ...]:
    """Fit `wanted` counts into `capacity`: keep each minimum, share the rest in proportion
    to the excess asked (rounded down)."""
    if sum(wanted) <= capacity:
        return tuple(wanted)
    extra = capacity - min_replicas * len(wanted)
    excess = [w - min_replicas for w in wanted]
    total = sum(excess)
    return tuple(min_replicas + (extra * e) // total for e in excess)


def autoscaler(
    *,
    min_replicas: int = 1,
    max_replicas: int = 8,
    target_utilization: float = 0.7,
    window_s: float = 1.0,
    drain_s: float = 0.5,
    down_delay_s: float = 1.0,
    interval_s: float = 0.1,
) -> Autoscaler:
    """The per-key replica policy (see the module docstring); every argument is checked."""
    if not (isinstance(min_replicas, int) and isinstance(max_replicas, int)):
        raise TypeError(
            f"min_replicas, max_replicas: expected ints, got {min_replicas!r}, {max_replicas!r}"
        )
    if not 0 <= min_replicas <= max_replicas or max_replicas < 1:
        raise ValueError(
            f"min_replicas, max_replicas: expected 0 <= min <= max and max >= 1, got "
            f"{min_replicas}, {max_replicas}"
        )
    if not 0 < target_utilization <= 1:
        raise ValueError(f"target_utilization: expected in (0, 1], got {target_utilization}")
    for name, v in (
        ("window_s", window_s),
        ("drain_s", drain_s),
        ("interval_s", interval_s),
    ):
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name}: expected a positive finite number of seconds, got {v}")
    if not (down_delay_s >= 0 and math.isfinite(down_delay_s)):
        raise ValueError(f"down_delay_s: expected >= 0 seconds, got {down_delay_s}")
    limits = dict(
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_utilization=target_utilization,
        drain_s=drain_s,
    )

    def init(keys: Sequence[str], capacity: int, now: float) -> ScaleState:
        keys = tuple(keys)
        if len(set(keys)) != len(keys) or not keys:
            raise ValueError(f"keys: expected distinct names, got {keys}")
        if min_replicas * len(keys) > capacity:
            raise ValueError(
                f"capacity: {capacity} cannot hold min_replicas={min_replicas} for each of "
                f"{len(keys)} keys"
            )
        n = len(keys)
        return ScaleState(
            keys=keys,
            capacity=int(capacity),
            replicas=(min_replicas,) * n,
            samples=((),) * n,
            row_s=(None,) * n,
            advice=(((now, min_replicas),),) * n,
        )

    def update(state: ScaleState, loads: Mapping[str, KeyLoad], now: float) -> ScaleState:
        unknown = sorted(set(loads) - set(state.keys))
        if unknown:
            raise ValueError(f"loads: unknown keys {unknown}; known {list(state.keys)}")
        samples, row_s, advice, wanted = [], [], [], []
        for i, k in enumerate(state.keys):
            load = loads.get(k, KeyLoad())
            win = tuple(s for s in state.samples[i] if s[0] > now - window_s)
            win += ((now, load.arrivals, load.busy_s, load.rows),)
            busy, rows = sum(s[2] for s in win), sum(s[3] for s in win)
            rs = busy / rows if rows > 0 else state.row_s[i]
            rate = sum(s[1] for s in win) / window_s
            target = target_replicas(rate, load.queued, rs, **limits)
            adv = tuple(a for a in state.advice[i] if a[0] > now - down_delay_s)
            adv += ((now, target),)
            samples.append(win)
            row_s.append(rs)
            advice.append(adv)
            wanted.append(max(a[1] for a in adv))
        return ScaleState(
            keys=state.keys,
            capacity=state.capacity,
            replicas=share_capacity(wanted, state.capacity, min_replicas),
            samples=tuple(samples),
            row_s=tuple(row_s),
            advice=tuple(advice),
        )

    return Autoscaler(init, update, float(interval_s), min_replicas, max_replicas)
