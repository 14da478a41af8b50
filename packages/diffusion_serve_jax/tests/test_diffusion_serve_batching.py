"""The profile-driven batching policy (`BatchPolicy`, `plan_batch`) and the simulator under it:
it reduces to the bucket-filling policy where a batch costs its rows (a CPU), takes whole
queues and waits a bounded time for fuller batches where batching is cheap (a GPU), and never
drops a request."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diffusion_serve_jax import (
    BatchPolicy,
    Catalog,
    ModelSpec,
    TensorSpec,
    WorkflowBuilder,
    batch_size_for,
    plan_batch,
    simulate,
    take_rows,
)

BUCKETS = (1, 4, 16)


def linear(c):  # a batch costs its rows (CPU-like): t(b) = c * b
    return {b: c * b for b in BUCKETS}


def flat(c, growth=0.2):  # a batch of 16 costs (1 + growth) x one row (GPU-like)
    return {b: c * (1 + growth * (b - 1) / 15) for b in BUCKETS}


def _workflows(models=("a", "b")):
    cat = Catalog()
    for m in models:
        cat.register_model(ModelSpec(m, {"x": TensorSpec(())}, {"y": TensorSpec(())}, None))
    for name, ms in (("w1", models), ("w2", models[-1:])):
        b = WorkflowBuilder(name).input("x", TensorSpec(()))
        src = "input.x"
        for i, m in enumerate(ms):
            b.node(f"n{i}", m, x=src)
            src = f"n{i}.y"
        cat.register_workflow(b.output("y", src).build())
    return cat.workflows


@given(
    st.integers(1, 40),
    st.sampled_from([4, 8, 16]),
    st.floats(1e-4, 1e-1),
    st.floats(0.0, 1.0),
)
def test_linear_profiles_reduce_to_bucket_filling(queued, max_batch, c, delay):
    pol = BatchPolicy({"m": linear(c)}, max_delay_s=delay)
    n, wake = plan_batch(pol, linear(c), "m", queued, BUCKETS, max_batch, 0.0, lambda: (0.0, 9.0))
    assert (n, wake) == (batch_size_for(queued, BUCKETS, max_batch), math.inf)


@given(st.integers(1, 40), st.sampled_from([4, 8, 16]), st.floats(1e-4, 1e-1))
def test_cheap_batching_takes_the_whole_queue(queued, max_batch, c):
    n = take_rows(flat(c), queued, max_batch)
    assert n == min(queued, max_batch)  # no split into smaller buckets
    assert n >= batch_size_for(queued, BUCKETS, max_batch)


@given(
    st.integers(1, 15),
    st.floats(0.0, 1.0),
    st.floats(0.0, 2.0),
    st.floats(0.0, 2.0),
    st.floats(0.0, 3.0),
)
def test_a_wait_never_outlasts_its_bound(queued, now, oldest_age, delay, slack):
    c = 1e-2
    prof = flat(c)
    oldest, earliest = now - oldest_age, now + slack
    pol = BatchPolicy({"m": prof}, max_delay_s=delay)
    n, wake = plan_batch(pol, prof, "m", queued, BUCKETS, 16, now, lambda: (oldest, earliest))
    if n == 0:  # waiting: only while within both bounds, and it says when to look again
        assert now < wake <= min(oldest + delay, earliest - prof[16]) + 1e-12
    else:
        assert wake == math.inf and n == queued
        assert now >= min(oldest + delay, earliest - prof[16]) - 1e-12


def test_policy_arguments_are_checked():
    wfs = _workflows()
    arr = [(0.0, "w1")]
    kw = dict(mode="micro", num_workers=2, max_batch=16, slo_s={"w1": 1, "w2": 1})
    prof = {"a": flat(1e-3), "b": flat(1e-3)}
    with pytest.raises(ValueError, match="batching.profiles"):
        simulate(wfs, prof, arr, batching=BatchPolicy({"a": prof["a"]}), **kw)
    with pytest.raises(ValueError, match="max_delay_s"):
        simulate(wfs, prof, arr, batching=BatchPolicy(prof, max_delay_s=-1.0), **kw)
    with pytest.raises(TypeError, match="BatchPolicy"):
        simulate(wfs, prof, arr, batching={"a": 1}, **kw)


def _arrivals(gaps, names=("w1", "w2")):
    t = np.cumsum(gaps)
    return [(float(x), names[i % 2]) for i, x in enumerate(t)]


@pytest.mark.parametrize("mode", ["micro", "monolithic"])
@given(st.lists(st.floats(0.0, 4e-3), min_size=5, max_size=40))
def test_simulator_with_linear_profiles_is_unchanged(mode, gaps):
    prof = {"a": linear(1e-3), "b": linear(2e-3)}
    wfs, arr = _workflows(), _arrivals(gaps)
    kw = dict(mode=mode, num_workers=3, max_batch=16, slo_s={"w1": 0.2, "w2": 0.2})
    old = simulate(wfs, prof, arr, **kw)
    new = simulate(wfs, prof, arr, batching=BatchPolicy(prof, max_delay_s=0.05), **kw)
    np.testing.assert_allclose(new, old)


@pytest.mark.parametrize("mode", ["micro", "monolithic"])
@given(st.lists(st.floats(0.0, 3e-3), min_size=5, max_size=40), st.floats(1e-3, 2e-2))
def test_simulator_serves_every_request_within_the_wait_bound(mode, gaps, delay):
    prof = {"a": flat(1e-3), "b": flat(2e-3)}
    wfs, arr = _workflows(), _arrivals(gaps)
    slo = {"w1": 1.0, "w2": 1.0}
    pol = BatchPolicy(prof, max_delay_s=delay)
    lat = simulate(wfs, prof, arr, mode=mode, num_workers=2, max_batch=16, slo_s=slo, batching=pol)
    assert np.all(np.isfinite(lat))  # nothing dropped or stranded in a waiting queue
    # a lone request waits at most `delay` per queue and then runs alone
    one = simulate(
        wfs, prof, [(0.0, "w1")], mode=mode, num_workers=2, max_batch=16, slo_s=slo, batching=pol
    )
    hops = 2 if mode == "micro" else 1
    assert one[0] <= hops * delay + prof["a"][16] + prof["b"][16] + 1e-12
    assert one[0] >= delay - 1e-12


def test_cheap_batching_takes_one_batch_instead_of_fragments():
    """15 requests at once on one device, a flat profile: one batch of 16, not 4+4+4+1+1+1."""
    prof = {"a": flat(1e-3), "b": flat(1e-3)}
    kw = dict(mode="micro", num_workers=1, max_batch=16, slo_s={"w1": 1.0, "w2": 1.0})
    arr = [(0.0, "w2")] * 15
    old = simulate(_workflows(), prof, arr, **kw)
    new = simulate(_workflows(), prof, arr, batching=BatchPolicy(prof, max_delay_s=1e-4), **kw)
    np.testing.assert_allclose(new, 1e-4 + prof["b"][16])  # waited for the burst, one batch
    assert old.max() == pytest.approx(3 * prof["b"][4] + 3 * prof["b"][1])


def test_cheap_batching_raises_attainment_near_a_gpu_like_clusters_capacity():
    prof = {"a": flat(1e-3), "b": flat(4e-3)}
    rng = np.random.default_rng(0)
    arr = _arrivals(rng.exponential(1 / 28000, size=3000))  # ~85% of the batched capacity
    slo = {"w1": 0.02, "w2": 0.02}
    kw = dict(mode="micro", num_workers=8, max_batch=16, slo_s=slo)
    old = simulate(_workflows(), prof, arr, **kw)
    new = simulate(_workflows(), prof, arr, batching=BatchPolicy(prof, max_delay_s=1e-3), **kw)
    assert np.mean(new <= 0.02) > np.mean(old <= 0.02) + 0.03
