"""Byte accounting == the payloads handed to the collectives; the partition combinator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import P
from jax.sharding import NamedSharding

import grad_compress as gc
from grad_compress import _stats
from testkit import assert_trees_close

MESH = jax.make_mesh((8,), ("dp",))
PARAMS = {"b": jnp.zeros((24,)), "v": jnp.zeros((40, 64)), "w": jnp.zeros((32, 40))}
LEAVES = len(jax.tree.leaves(PARAMS))
SEEDS = st.integers(0, 2**16)


def grads_for(seed: int, workers: int = 8):
    keys = jax.random.split(jax.random.key(seed), LEAVES)
    leaves, treedef = jax.tree.flatten(PARAMS)
    return treedef.unflatten(
        [jax.random.normal(k, (workers,) + x.shape) for k, x in zip(keys, leaves, strict=True)]
    )


@pytest.fixture
def wire(monkeypatch):
    """Record the bytes of every payload that actually enters a collective, per device."""
    sent: list[int] = []

    def recorder(collective):
        def wrapped(x, axis_name):
            n = sum(a.size * jnp.dtype(a.dtype).itemsize for a in jax.tree.leaves(x))
            # runs only where the collective runs (inside the taken lax.switch / cond branch)
            jax.debug.callback(lambda _: sent.append(n), jnp.zeros(()))
            return collective(x, axis_name)

        return wrapped

    monkeypatch.setattr(_stats, "_pmean_collective", recorder(_stats._pmean_collective))
    monkeypatch.setattr(_stats, "_all_gather_collective", recorder(_stats._all_gather_collective))
    return sent


def on_8(comp):
    """Jitted one-step update on 8 devices; `run(steps, **kw)` -> the counted bytes per step."""

    def step(g, s, k, kw):
        g, s = jax.tree.map(lambda x: x[0], (g, s))
        out, s, stats = comp.update(g, s, key=k, axis_name="dp", **kw)
        return jax.tree.map(lambda x: x[None], (out, s)) + (stats,)

    f = jax.jit(
        jax.shard_map(
            step,
            mesh=MESH,
            in_specs=(P("dp"), P("dp"), P(), P()),
            out_specs=(P("dp"), P("dp"), P()),
            check_vma=False,
        )
    )
    sh = NamedSharding(MESH, P("dp"))
    state = jax.tree.map(lambda x: jnp.broadcast_to(x, (8,) + x.shape), comp.init(PARAMS))

    def run(steps: int, **kw):
        state8, counted = jax.device_put(state, sh), []
        for t in range(steps):
            g = jax.device_put(grads_for(t), sh)
            _, state8, stats = f(g, state8, jax.random.key(t), kw)
            counted.append(float(stats.total_bytes))
        jax.effects_barrier()
        return counted

    return run


STAGES = lambda path, shape: 0 if path[0].key == "v" else 1
COMPRESSORS = {
    "powersgd_warmup": lambda: gc.powersgd(2, max_rank=4, start_step=1),
    "edgc": lambda: gc.edgc(
        num_stages=2, stage_fn=STAGES, init_rank=2, max_rank=4, window=1, period=2, bins=32
    ),
    "topk": lambda: gc.topk(0.05),
    "randomk": lambda: gc.randomk(0.1),
    "by_shape": lambda: gc.by_shape(gc.powersgd(2), gc.qsgd()),
}


@pytest.mark.parametrize("name", list(COMPRESSORS))
def test_counted_bytes_are_the_bytes_handed_to_collectives(wire, name):
    counted = on_8(COMPRESSORS[name]())(3)
    per_step = len(wire) // 8  # every device records each collective it runs
    assert len(wire) == 8 * per_step and per_step > 0
    assert float(sum(wire)) / 8 == pytest.approx(sum(counted), rel=0, abs=0)


def test_powersgd_sends_only_the_active_columns(wire):
    n_plus_m = (40 + 64) + (32 + 40)  # v and w; b goes uncompressed
    run = on_8(gc.powersgd(1, max_rank=4))  # one compiled step serves every rank
    # a uniform rank r is one of the buckets: exactly r (n + m) values per matrix
    for r in (1, 2, 4):
        assert run(1, ranks=jnp.full((LEAVES,), r, jnp.int32)) == [4 * (24 + r * n_plus_m)]
    # mixed ranks (v: 1, w: 3) pad to the next of 2 * max_rank sizes, below rank 3 everywhere
    counted = run(1, ranks=jnp.array([4, 1, 3], jnp.int32))
    sizes_p, sizes_q = gc.bucket_sizes(4 * 72, 8), gc.bucket_sizes(4 * 104, 8)
    p = min(s for s in sizes_p if s >= 40 + 3 * 32)
    q = min(s for s in sizes_q if s >= 64 + 3 * 40)
    assert counted == [4 * (24 + p + q)]
    assert counted[0] < 4 * (24 + 3 * n_plus_m)
    assert float(sum(wire)) / 8 == 4 * (3 * 24 + 7 * n_plus_m) + counted[0]


def _fresh_update(comp, fold: bool = False):
    """jit(g, key -> comp.update from comp.init(g)), compiled once per compressor (not per draw)."""
    key_of = (lambda k: jax.random.fold_in(k, 0)) if fold else (lambda k: k)
    return jax.jit(lambda g, k: comp.update(g, comp.init(g), key=key_of(k)))


ONE_LABEL = [
    (_fresh_update(c, fold=True), _fresh_update(gc.partition({"all": c}, lambda p, s: "all")))
    for c in (gc.powersgd(2), gc.topk(0.05), gc.randomk(0.1))
]
BY_SHAPE = _fresh_update(gc.by_shape(gc.powersgd(2)))
PSGD = _fresh_update(gc.powersgd(2))


@given(seed=SEEDS)
def test_partition_with_one_label_is_that_compressor(seed):
    g = jax.tree.map(lambda x: x[0], grads_for(seed, 1))
    key = jax.random.key(seed)  # label 0 of a partition draws with fold_in(key, 0)
    for direct, part in ONE_LABEL:
        out_a, state_a, stats_a = direct(g, key)
        out_b, state_b, stats_b = part(g, key)
        assert_trees_close(out_a, out_b, rtol=0, atol=0)
        assert_trees_close(state_a, state_b.inner["all"], rtol=0, atol=0)
        assert_trees_close(stats_a, stats_b, rtol=0, atol=0)


@given(seed=SEEDS)
def test_by_shape_routes_vectors_exactly_and_bytes_add_up(seed):
    g = jax.tree.map(lambda x: x[0], grads_for(seed, 1))
    key = jax.random.key(0)
    out, state, stats = BY_SHAPE(g, key)
    assert state.inner["vector"] is not None and state.inner["matrix"] is not None
    np.testing.assert_array_equal(out["b"], g["b"])  # one worker: the exact mean is itself
    out_m, _, stats_m = PSGD({"v": g["v"], "w": g["w"]}, key)
    assert_trees_close({"v": out["v"], "w": out["w"]}, out_m, rtol=0, atol=0)
    none = gc.no_compression()
    vec = none.update({"b": g["b"]}, none.init({"b": g["b"]}))[2]
    assert_trees_close(stats, stats_m + vec, rtol=0, atol=0)
    assert float(stats.total_bytes) == 4 * (24 + 2 * (40 + 64 + 32 + 40))


def test_partition_bad_inputs_raise():
    with pytest.raises(ValueError, match="compressors"):
        gc.partition({}, lambda path, shape: "a")
    with pytest.raises(TypeError, match="compressors"):
        gc.partition({"a": object()}, lambda path, shape: "a")
    with pytest.raises(ValueError, match="label_fn"):
        gc.partition({"a": gc.no_compression()}, lambda path, shape: "b").init(PARAMS)
