"""The discrete-event simulator: exact service times at low load, batching, CPU sharing."""

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diffusion_serve_jax import (
    Catalog,
    ModelSpec,
    TensorSpec,
    WorkflowBuilder,
    batch_time,
    max_load_at,
    shifting_mix,
    simulate,
)

PROF = {"a": {1: 0.001, 4: 0.002}, "b": {1: 0.003, 4: 0.006}}


def _catalog():
    cat = Catalog()
    for m in PROF:
        cat.register_model(ModelSpec(m, {"x": TensorSpec(())}, {"y": TensorSpec(())}, None))
    for name, models in (("w1", ("a", "b")), ("w2", ("b",))):
        b = WorkflowBuilder(name).input("x", TensorSpec(()))
        src = "input.x"
        for i, m in enumerate(models):
            b.node(f"n{i}", m, x=src)
            src = f"n{i}.y"
        cat.register_workflow(b.output("y", src).build())
    return cat.workflows


@given(st.integers(1, 13))
def test_batch_time_chunks_above_the_largest_bucket(n):
    full, rest = divmod(n, 4)
    want = full * 0.002 + (0 if rest == 0 else (0.001 if rest == 1 else 0.002))
    assert batch_time(PROF["a"], n) == pytest.approx(want)


@pytest.mark.parametrize("mode", ["micro", "monolithic"])
def test_isolated_requests_take_their_service_time(mode):
    wfs = _catalog()
    arr = [(0.0, "w1"), (1.0, "w2"), (2.0, "w1")]
    lat = simulate(
        wfs,
        PROF,
        arr,
        mode=mode,
        num_workers=2,
        max_batch=4,
        slo_s={"w1": 1, "w2": 1},
        request_overhead_s=0.5,
    )
    np.testing.assert_allclose(lat, [0.504, 0.503, 0.504])


def test_shared_model_batches_across_workflows_and_cpu_sharing_slows():
    wfs = _catalog()
    arr = [(0.0, "w2")] * 4 + [(0.0, "w1")] * 4
    slo = {"w1": 1, "w2": 1}
    micro = simulate(wfs, PROF, arr, mode="micro", num_workers=2, max_batch=4, slo_s=slo)
    mono = simulate(wfs, PROF, arr, mode="monolithic", num_workers=2, max_batch=4, slo_s=slo)
    assert np.all(np.isfinite(micro)) and np.all(np.isfinite(mono))
    shared = simulate(
        wfs, PROF, arr, mode="micro", num_workers=2, max_batch=4, slo_s=slo, cores=1.0
    )
    assert shared.max() > micro.max()
    with pytest.raises(ValueError, match="profiles"):
        simulate(wfs, {"a": PROF["a"]}, arr, mode="micro", num_workers=2, max_batch=4, slo_s=slo)


@given(st.lists(st.floats(0, 1), min_size=3, max_size=3))
def test_max_load_at_stays_within_the_passing_range(att):
    x = max_load_at([1.0, 2.0, 3.0], att)
    if att[0] < 0.9:
        assert x == 0.0
    else:
        first_fail = next((i for i, a in enumerate(att) if a < 0.9), None)
        hi = 3.0 if first_fail is None else first_fail + 1.0
        assert 1.0 <= x <= hi


SIZES = {"a": 1.0, "b": 1.0}
LOADS = {"a": 0.1, "b": 0.2}


def test_memory_budget_makes_monolithic_swap_while_micro_shares():
    # budget 2: micro holds a and b (shared by both workflows); a monolithic replica holds
    # w1 (a + b, its own copies) or w2 (b), never both, so switching pays the load time
    wfs = _catalog()
    arr = [(0.0, "w1"), (1.0, "w2"), (2.0, "w1")]
    slo = {"w1": 1, "w2": 1}
    kw = dict(max_batch=4, slo_s=slo, model_bytes=SIZES, load_s=LOADS, with_stats=True)
    mono, ms = simulate(wfs, PROF, arr, mode="monolithic", num_workers=1, memory_bytes=2, **kw)
    micro, us = simulate(wfs, PROF, arr, mode="micro", num_workers=1, memory_bytes=2, **kw)
    np.testing.assert_allclose(mono, [0.004, 0.2 + 0.003, 0.3 + 0.004])
    np.testing.assert_allclose(micro, [0.004, 0.003, 0.004])
    assert ms == {"loads": 2, "load_s": pytest.approx(0.5), "swaps": 0, "swap_s": 0.0}
    assert us["loads"] == 0


@given(st.lists(st.floats(0, 0.02), min_size=6, max_size=6))
def test_memory_that_holds_everything_changes_nothing_for_micro(gaps):
    wfs = _catalog()
    arr = [(float(t), ("w1", "w2")[i % 2]) for i, t in enumerate(np.cumsum(gaps))]
    kw = dict(mode="micro", num_workers=2, max_batch=4, slo_s={"w1": 1, "w2": 1})
    free = simulate(wfs, PROF, arr, **kw)
    held = simulate(wfs, PROF, arr, memory_bytes=2, model_bytes=SIZES, load_s=LOADS, **kw)
    np.testing.assert_allclose(held, free)


def test_memory_arguments_are_checked():
    wfs = _catalog()
    kw = dict(mode="monolithic", num_workers=1, max_batch=4, slo_s={"w1": 1, "w2": 1})
    with pytest.raises(ValueError, match="memory_bytes: 1 cannot hold"):
        simulate(wfs, PROF, [(0.0, "w1")], memory_bytes=1, model_bytes=SIZES, load_s=LOADS, **kw)
    with pytest.raises(ValueError, match="load_s: .* missing"):
        simulate(wfs, PROF, [(0.0, "w1")], memory_bytes=4, model_bytes=SIZES, **kw)


@given(st.floats(0.0, 3.0))
def test_shifting_mix_draws_known_workflows_in_time_order(skew):
    names = ["p", "q", "r"]
    arr = shifting_mix(names, 200.0, 1.0, phase_s=0.25, skew=skew, key=jax.random.key(1))
    times = [t for t, _ in arr]
    assert times == sorted(times) and 0 <= times[0] and times[-1] < 1.0
    assert {w for _, w in arr} <= set(names)


def test_shifting_mix_changes_the_popular_workflow():
    names = ["p", "q", "r", "s"]
    arr = shifting_mix(names, 2000.0, 2.0, phase_s=0.5, skew=4.0, key=jax.random.key(0))
    tops = []
    for ph in range(4):
        ws = [w for t, w in arr if ph * 0.5 <= t < (ph + 1) * 0.5]
        top = max(names, key=ws.count)
        assert ws.count(top) > 0.8 * len(ws)  # skew 4: the top workflow takes ~92%
        tops.append(top)
    assert len(set(tops)) > 1
    with pytest.raises(ValueError, match="phase_s"):
        shifting_mix(names, 10.0, 1.0, phase_s=0.0, key=jax.random.key(0))


HOT = {"w1": {"b": "v1"}, "w2": {}}  # w1 runs variant v1 of model b, w2 the base weights


@given(st.lists(st.sampled_from(["w1", "w2"]), min_size=4, max_size=4))
def test_hot_swap_pays_the_swap_time_exactly_when_the_variant_changes(seq):
    # one device, isolated requests: latency = the workflow's service time, plus swap_s
    # whenever the held variant of b differs from the one the workflow needs
    wfs = _catalog()
    arr = [(float(i), w) for i, w in enumerate(seq)]
    kw = dict(max_batch=4, slo_s={"w1": 1, "w2": 1}, with_stats=True)
    lat, st_ = simulate(
        wfs, PROF, arr, mode="hot_swap", num_workers=1, variants=HOT, swap_s=0.1, **kw
    )
    service = {"w1": 0.004, "w2": 0.003}
    held, want = None, []
    for w in seq:
        v = HOT[w].get("b")
        want.append(service[w] + (0.1 if v != held else 0.0))
        held = v
    np.testing.assert_allclose(lat, want)
    assert st_["swaps"] == sum(t > 0.05 for t in want)
    assert st_["swap_s"] == pytest.approx(0.1 * st_["swaps"])


@given(st.lists(st.floats(0, 0.004), min_size=8, max_size=8))
def test_hot_swap_without_variants_is_the_monolith_holding_every_replica(gaps):
    wfs = _catalog()
    arr = [(float(t), ("w1", "w2")[i % 3 == 0]) for i, t in enumerate(np.cumsum(gaps))]
    kw = dict(num_workers=2, max_batch=4, slo_s={"w1": 1, "w2": 1})
    hot = simulate(wfs, PROF, arr, mode="hot_swap", variants={}, swap_s=0.1, **kw)
    mono = simulate(
        wfs, PROF, arr, mode="monolithic", memory_bytes=3, model_bytes=SIZES, load_s=LOADS, **kw
    )
    np.testing.assert_allclose(hot, mono)


def test_hot_swap_batches_one_variant_and_an_idle_holder_takes_its_variant():
    wfs = _catalog()
    kw = dict(max_batch=4, slo_s={"w1": 1, "w2": 1}, variants=HOT, swap_s=0.1)
    # four w1 requests at once on one device: one swap, then batches of one (the
    # bucket-filling rule: 3 queued rows and buckets 1 / 4 make 1 + 1 + 1), none swapping
    lat, st_ = simulate(
        wfs, PROF, [(0.0, "w1")] * 4, mode="hot_swap", num_workers=1, with_stats=True, **kw
    )
    np.testing.assert_allclose(lat, [0.104, 0.108, 0.112, 0.116])
    assert st_["swaps"] == 1
    # two devices: after a w1 batch, device 0 holds v1; a later w1 goes to it, not device 1
    arr = [(0.0, "w1"), (1.0, "w1")]
    lat = simulate(wfs, PROF, arr, mode="hot_swap", num_workers=2, **kw)
    np.testing.assert_allclose(lat, [0.104, 0.004])


def test_hot_swap_arguments_are_checked():
    wfs = _catalog()
    kw = dict(num_workers=1, max_batch=4, slo_s={"w1": 1, "w2": 1})
    arr = [(0.0, "w1")]
    with pytest.raises(ValueError, match="needs both"):
        simulate(wfs, PROF, arr, mode="hot_swap", variants=HOT, **kw)
    with pytest.raises(ValueError, match="only with mode='hot_swap'"):
        simulate(wfs, PROF, arr, mode="monolithic", swap_s=0.1, **kw)
    with pytest.raises(ValueError, match="unknown workflows"):
        simulate(wfs, PROF, arr, mode="hot_swap", variants={"w9": {}}, swap_s=0.1, **kw)
    with pytest.raises(ValueError, match="not nodes of workflow 'w2'"):
        simulate(wfs, PROF, arr, mode="hot_swap", variants={"w2": {"a": "v"}}, swap_s=0.1, **kw)
    with pytest.raises(ValueError, match="no swap time for swapped models"):
        simulate(wfs, PROF, arr, mode="hot_swap", variants=HOT, swap_s={"a": 0.1}, **kw)
    with pytest.raises(ValueError, match="seconds >= 0"):
        simulate(wfs, PROF, arr, mode="hot_swap", variants=HOT, swap_s=-1.0, **kw)
    with pytest.raises(ValueError, match="memory_bytes"):
        simulate(
            wfs,
            PROF,
            arr,
            mode="hot_swap",
            variants=HOT,
            swap_s=0.1,
            memory_bytes=3,
            model_bytes=SIZES,
            load_s=LOADS,
            **kw,
        )
