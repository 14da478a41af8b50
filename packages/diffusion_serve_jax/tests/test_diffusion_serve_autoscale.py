"""Per-model autoscaling: the pure policy (bounded, monotone in load, no flapping under
constant load, back to the minimum when idle, capacity shared) and the runtime applying it
(a burst on one model or workflow raises its replicas and only its, idle brings them back,
every request completes with the right answer, /metrics reports replicas and events)."""

import asyncio
import time

import jax
import jax.numpy as jnp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diffusion_serve_jax import (
    Catalog,
    KeyLoad,
    ModelSpec,
    ServingRuntime,
    TensorSpec,
    WorkflowBuilder,
    autoscaler,
    share_capacity,
    target_replicas,
)

KEYS = ("a", "b", "c")
POLICY = dict(min_replicas=1, max_replicas=6, window_s=1.0, down_delay_s=0.5, interval_s=0.1)


def _run(policy, loads_per_tick, ticks, capacity=12, dt=0.1):
    """Replica counts after each of `ticks` updates fed the same per-key loads."""
    state = policy.init(KEYS, capacity, 0.0)
    out = []
    for i in range(1, ticks + 1):
        state = policy.update(state, loads_per_tick, i * dt)
        out.append(state.replicas)
    return out


load = st.builds(
    KeyLoad,
    arrivals=st.integers(0, 40),
    queued=st.integers(0, 60),
    busy_s=st.floats(0.0, 0.5),
    rows=st.integers(0, 16),
)


@given(st.lists(st.tuples(load, load, load), min_size=1, max_size=25), st.integers(3, 12))
def test_policy_counts_stay_within_min_max_and_capacity(seq, capacity):
    policy = autoscaler(**POLICY)
    state = policy.init(KEYS, capacity, 0.0)
    for i, loads in enumerate(seq):
        state = policy.update(state, dict(zip(KEYS, loads, strict=True)), 0.1 * (i + 1))
        assert all(1 <= n <= 6 for n in state.replicas), state.replicas
        assert sum(state.replicas) <= capacity


@given(load, st.integers(0, 30), st.integers(0, 30), st.integers(2, 12))
def test_policy_is_monotone_in_a_keys_own_load(base, more_arrivals, more_queued, capacity):
    """More arrivals or a longer queue for key a never gives a fewer replicas, while the
    others' loads stay fixed (with and without the capacity binding)."""
    policy = autoscaler(**POLICY)
    state = policy.init(KEYS, max(capacity, 3), 0.0)
    warm = {k: KeyLoad(5, 2, 0.2, 10) for k in KEYS}
    state = policy.update(state, warm, 0.1)
    heavier = base._replace(
        arrivals=base.arrivals + more_arrivals, queued=base.queued + more_queued
    )
    lo = policy.update(state, {**warm, "a": base}, 0.2)
    hi = policy.update(state, {**warm, "a": heavier}, 0.2)
    assert hi.replicas[0] >= lo.replicas[0]
    for rate in (0.0, 1.0, 10.0, 100.0):
        kw = dict(min_replicas=0, max_replicas=8, target_utilization=0.7, drain_s=0.5)
        assert target_replicas(rate, 3, 0.01, **kw) <= target_replicas(rate * 2, 3, 0.01, **kw)


@given(st.integers(0, 40), st.integers(0, 20), st.floats(0.001, 0.05))
def test_constant_load_does_not_flap(arrivals, queued, row_s):
    """Fed the same load every tick, each key's count moves in one direction only, settles,
    and an alternating load above and below a level is held at the higher count."""
    policy = autoscaler(**POLICY)
    steady = KeyLoad(arrivals, queued, row_s * 8, 8)
    counts = _run(policy, {k: steady for k in KEYS}, ticks=40)
    for i in range(len(KEYS)):
        seq = [c[i] for c in counts]
        diffs = [b - a for a, b in zip(seq, seq[1:], strict=False) if b != a]
        assert all(d > 0 for d in diffs) or all(d < 0 for d in diffs), seq
        assert seq[-15:] == [seq[-1]] * 15  # settled once the window is full
    state = policy.init(KEYS, 12, 0.0)
    seen = []
    for i in range(1, 40):
        load_i = KeyLoad(40 if i % 2 else 0, 0, 0.02 * 8, 8)
        state = policy.update(state, {"a": load_i}, i * 0.1)
        seen.append(state.replicas[0])
    assert seen[-20:] == [seen[-1]] * 20


def test_idle_scales_to_min_and_capacity_is_shared():
    policy = autoscaler(**POLICY)
    busy = {"a": KeyLoad(60, 30, 0.02 * 16, 16)}
    counts = _run(policy, busy, ticks=10)
    assert counts[-1] == (6, 1, 1)  # a burst on a: only a grows, to its maximum
    state = policy.init(KEYS, 12, 0.0)
    for i in range(1, 11):
        state = policy.update(state, busy, i * 0.1)
    for i in range(11, 30):  # idle: after the window and the down delay, back to the minimum
        state = policy.update(state, {}, i * 0.1)
    assert state.replicas == (1, 1, 1)
    # capacity 4 for three keys that each want 6: minimums kept, the rest shared
    tight = policy.init(KEYS, 4, 0.0)
    tight = policy.update(tight, dict.fromkeys(KEYS, KeyLoad(60, 30, 0.32, 16)), 0.1)
    assert sum(tight.replicas) <= 4 and min(tight.replicas) >= 1
    assert share_capacity([6, 1, 1], 4, 1) == (2, 1, 1)
    assert share_capacity([2, 1], 4, 1) == (2, 1)


def test_policy_errors_name_the_argument():
    for kw, word in (
        (dict(min_replicas=3, max_replicas=2), "min_replicas"),
        (dict(max_replicas=0, min_replicas=0), "max_replicas"),
        (dict(target_utilization=1.5), "target_utilization"),
        (dict(window_s=0.0), "window_s"),
        (dict(down_delay_s=-1.0), "down_delay_s"),
        (dict(interval_s=float("inf")), "interval_s"),
    ):
        with pytest.raises(ValueError, match=word):
            autoscaler(**kw)
    with pytest.raises(TypeError, match="min_replicas"):
        autoscaler(min_replicas=1.5)
    policy = autoscaler(min_replicas=2)
    with pytest.raises(ValueError, match="capacity"):
        policy.init(KEYS, 5, 0.0)
    with pytest.raises(ValueError, match="loads"):
        policy.update(policy.init(KEYS, 6, 0.0), {"zz": KeyLoad()}, 0.1)


def _two_model_catalog():
    """Models a and b (each a 20 ms host sleep per batch), workflows wa -> a and wb -> b."""

    def sleepy(p, x):
        def sleep(v):
            time.sleep(0.02)
            return v

        shape = jax.ShapeDtypeStruct(x["x"].shape, jnp.float32)
        return {"y": jax.pure_callback(sleep, shape, x["x"]) * p}

    cat = Catalog()
    for m, scale in (("a", 2.0), ("b", 3.0)):
        cat.register_model(
            ModelSpec(m, {"x": TensorSpec(())}, {"y": TensorSpec(())}, sleepy, jnp.asarray(scale))
        )
        cat.register_workflow(
            WorkflowBuilder(f"w{m}")
            .input("x", TensorSpec(()))
            .node("n", m, x="input.x")
            .output("y", "n.y")
            .build()
        )
    return cat


@pytest.mark.parametrize("mode", ["micro", "monolithic"])
def test_runtime_burst_scales_only_its_key_and_idle_scales_back(mode):
    policy = autoscaler(
        min_replicas=1, max_replicas=4, window_s=0.3, drain_s=0.2, down_delay_s=0.2, interval_s=0.02
    )
    cat = _two_model_catalog()
    burst_key, other = ("a", "b") if mode == "micro" else ("wa", "wb")
    label = "model" if mode == "micro" else "workflow"

    async def main():
        rt = ServingRuntime(
            cat, mode=mode, num_workers=4, max_batch=1, buckets=(1,), autoscale=policy
        )
        assert rt.replicas == {burst_key: 1, other: 1}
        await rt.start()
        for w in ("wa", "wb", "wa", "wb"):  # compile, then one timed batch each
            assert (await rt.submit(w, {"x": 1.0}).future)["y"] in (2.0, 3.0)
        peak = 1
        reqs = [rt.submit("wa", {"x": float(i)}) for i in range(40)]
        while not all(r.future.done() for r in reqs):
            peak = max(peak, rt.replicas[burst_key])
            assert rt.replicas[other] == 1  # the idle key never grows
            await asyncio.sleep(0.01)
        assert [float(r.future.result()["y"]) for r in reqs] == [2.0 * i for i in range(40)]
        assert peak >= 2 and rt.stats.scale_ups[burst_key] >= 1
        assert rt.stats.scale_ups[other] == 0
        metrics = rt.metrics_text()
        assert f'diffusion_scaling_events_total{{{label}="{burst_key}",direction="up"}}' in metrics
        for _ in range(300):  # idle: back to the minimum after the window and the down delay
            if rt.replicas[burst_key] == 1:
                break
            await asyncio.sleep(0.01)
        assert rt.replicas == {burst_key: 1, other: 1}
        assert rt.stats.scale_downs[burst_key] >= 1
        assert f'diffusion_replicas{{{label}="{burst_key}"}} 1' in rt.metrics_text()
        await rt.stop()

    asyncio.run(main())


def test_runtime_autoscale_errors_and_cold_start():
    cat = _two_model_catalog()
    with pytest.raises(TypeError, match="autoscale"):
        ServingRuntime(cat, autoscale={"min_replicas": 1})
    with pytest.raises(ValueError, match="autoscale"):
        ServingRuntime(
            cat,
            autoscale=autoscaler(),
            memory_bytes=1e6,
            loader=lambda m: None,
            load_s={"a": 0.1, "b": 0.1},
        )
    with pytest.raises(ValueError, match="replicas"):
        ServingRuntime(cat, autoscale=autoscaler(), replicas={"a": 2})
    with pytest.raises(ValueError, match="capacity"):
        ServingRuntime(cat, num_workers=1, autoscale=autoscaler(min_replicas=1))

    async def main():  # a key at zero replicas scales up when its first item arrives
        policy = autoscaler(min_replicas=0, max_replicas=2, interval_s=10.0)
        rt = ServingRuntime(cat, num_workers=1, max_batch=1, buckets=(1,), autoscale=policy)
        await rt.start()
        assert rt.replicas == {"a": 0, "b": 0}
        assert float((await rt.submit("wb", {"x": 2.0}).future)["y"]) == 6.0
        assert rt.replicas["b"] == 1 and rt.replicas["a"] == 0
        await rt.stop()

    asyncio.run(main())
