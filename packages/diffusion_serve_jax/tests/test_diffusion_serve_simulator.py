"""The discrete-event simulator: exact service times at low load, batching, CPU sharing."""

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
