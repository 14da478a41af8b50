"""Node executors: bucketed batching == direct calls, no recompiles, sharded == single device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diffusion_serve_jax import ModelSpec, NodeExecutor, TensorSpec, pick_bucket, stack_rows
from testkit import assert_trees_close


def _mlp_spec():
    key = jax.random.key(0)
    params = {"w": jax.random.normal(key, (4, 3)), "b": jnp.arange(3.0)}

    def fn(p, x):
        return {"y": jnp.tanh(x["x"] @ p["w"] + p["b"][None]), "s": x["x"].sum(-1)}

    return ModelSpec(
        "mlp", {"x": TensorSpec((4,))}, {"y": TensorSpec((3,)), "s": TensorSpec(())}, fn, params
    )


@pytest.fixture(scope="module")
def executor():
    return NodeExecutor(_mlp_spec(), buckets=(1, 4, 8))


@given(st.integers(1, 40))
def test_pick_bucket_is_smallest_fitting(n):
    buckets = (1, 4, 8)
    b = pick_bucket(n, buckets)
    assert b in buckets
    if n <= 8:
        assert b >= n and all(c < n for c in buckets if c < b)
    else:
        assert b == 8


@given(st.integers(1, 19), st.integers(0, 2**16))
def test_bucketed_run_matches_direct_call(executor, n, seed):
    spec = executor.spec
    x = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
    got = executor.run({"x": x})
    want = jax.jit(spec.fn)(spec.params, {"x": jnp.asarray(x)})
    assert_trees_close(got, {k: np.asarray(v) for k, v in want.items()}, rtol=1e-5, atol=1e-6)
    assert executor.traces <= 3  # one compilation per bucket, never per batch size


def test_bad_batches_raise(executor):
    with pytest.raises(ValueError, match="missing inputs"):
        executor.run({})
    with pytest.raises(ValueError, match="n: expected a batch"):
        pick_bucket(0, (1, 2))
    with pytest.raises(ValueError, match="buckets"):
        NodeExecutor(_mlp_spec(), buckets=(0, 2))


def test_stack_rows_passes_whole_batches_without_copy():
    a = np.arange(12.0).reshape(3, 4)
    assert stack_rows([(a, 0), (a, 1), (a, 2)]) is a
    out = stack_rows([(a, 2), (a, 0)])
    np.testing.assert_array_equal(out, a[[2, 0]])
    assert out is not a


def test_sharded_executor_matches_single_device():
    devices = jax.devices()
    assert len(devices) == 8
    mesh = jax.make_mesh((8,), ("data",))
    spec = _mlp_spec()
    single = NodeExecutor(spec, buckets=(8, 16))
    sharded = NodeExecutor(spec, buckets=(8, 16), mesh=mesh)
    x = np.random.default_rng(0).normal(size=(11, 4)).astype(np.float32)
    assert_trees_close(sharded.run({"x": x}), single.run({"x": x}), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 8"):
        NodeExecutor(spec, buckets=(4,), mesh=mesh)


def test_reloaded_weights_do_not_recompile():
    """Weights restored from a checkpoint arrive committed to a device; serving them must
    reuse the compiled executable (it compiled the model again, seconds per load, before)."""
    ex = NodeExecutor(_mlp_spec(), buckets=(4,))
    x = {"x": np.ones((2, 4), np.float32)}
    first = ex.run(x)
    doubled = jax.tree.map(lambda a: 2 * a, ex.spec.params)
    compiles = []

    def listen(name, secs, **kw):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles.append(secs)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        for params in (
            jax.device_put(doubled, jax.devices()[0]),  # committed, as orbax restores them
            jax.tree.map(np.asarray, doubled),  # host arrays
        ):
            ex.set_params(params)
            got = ex.run(x)
            assert not np.allclose(got["y"], first["y"])  # the new weights are served
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles == [] and ex.traces == 1
    with pytest.raises(ValueError, match="params: expected the tree"):
        ex.set_params({"w": doubled["w"]})


def test_single_thread_flags_keep_later_flags_readable(monkeypatch):
    """XLA stops reading XLA_FLAGS at the first bare word, so every token of the prologue must
    be a `--` flag (a bare one silently dropped flags appended after it); idempotent."""
    from diffusion_serve_jax import _platform

    assert all(t.startswith("--") for t in _platform.SINGLE_THREAD_FLAGS.split())
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    once = _platform.single_threaded_cpu()
    assert _platform.single_threaded_cpu() == once
    assert once.split() == [
        "--xla_force_host_platform_device_count=8",
        "--xla_cpu_multi_thread_eigen=false",
    ]
