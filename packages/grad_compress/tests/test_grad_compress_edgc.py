"""EDGC: entropy estimator, rank-error model, window controller, the compressor, checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import P
from jax.sharding import NamedSharding

import grad_compress as gc
from testkit import assert_trees_close

MESH = jax.make_mesh((8,), ("dp",))
SEEDS = st.integers(0, 2**16)
EDGES = gc.fixed_edges(1.0, bins=64)
ENTROPY = jax.jit(gc.histogram_entropy)
UNIFORM_ENTROPY = jax.jit(lambda x: gc.uniform_histogram_entropy(x, -4.0, 4.0, 64))


def entropy_reference(x: np.ndarray, edges: np.ndarray) -> float:
    counts, _ = np.histogram(np.clip(x, edges[0], edges[-1]), bins=edges)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


@given(seed=SEEDS, scale=st.floats(0.1, 3.0))
def test_histogram_entropy_matches_numpy(seed, scale):
    x = np.asarray(jax.random.normal(jax.random.key(seed), (500,))) * scale
    got = float(ENTROPY(jnp.asarray(x), EDGES))
    assert got == pytest.approx(entropy_reference(x, np.asarray(EDGES)), abs=1e-4)
    fast = float(UNIFORM_ENTROPY(jnp.asarray(x)))  # O(1)-binning fast path, same bins
    assert fast == pytest.approx(got, abs=1e-3)
    assert 0.0 <= got <= np.log2(64) + 1e-6


def test_uniform_over_bins_is_log2_bins_and_gaussian_matches_differential_entropy():
    centers = (EDGES[1:] + EDGES[:-1]) / 2
    assert float(ENTROPY(jnp.tile(centers, 3), EDGES)) == pytest.approx(6.0, abs=1e-5)
    sigma, edges = 1.0, gc.fixed_edges(1.0, bins=512, width=8.0)
    x = jax.random.normal(jax.random.key(0), (400_000,)) * sigma
    width = float(edges[1] - edges[0])
    expected = 0.5 * np.log2(2 * np.pi * np.e * sigma**2) - np.log2(width)  # H = h - log2(Delta)
    assert float(gc.histogram_entropy(x, edges)) == pytest.approx(expected, abs=0.02)


def test_subsampled_entropy_is_within_0_05_bits_of_full():
    k1, k2 = jax.random.split(jax.random.key(0))
    tree = {"a": jax.random.normal(k1, (256, 512)), "b": jax.random.laplace(k2, (128, 256))}
    edges = gc.fixed_edges(1.0, bins=256)
    full = gc.gradient_entropy(tree, edges)
    sub = gc.gradient_entropy(tree, edges, fraction=0.06, key=jax.random.key(1))
    assert abs(float(full.bits) - float(sub.bits)) < 0.05
    assert float(sub.variance) == pytest.approx(float(full.variance), rel=0.05)
    blocks = gc.subsample(tree, fraction=0.06, key=jax.random.key(2), block=64)
    assert blocks.shape == ((123 + 31) * 64,)  # ceil(0.06 * size / 64) runs of 64 per leaf
    assert abs(float(gc.histogram_entropy(blocks, edges)) - float(full.bits)) < 0.05


def test_eckart_young_curve_is_the_truncated_svd_error():
    m = jax.random.normal(jax.random.key(0), (16, 12)) @ jnp.diag(jnp.linspace(3.0, 0.1, 12))
    u, s, vt = np.linalg.svd(np.asarray(m, np.float64), full_matrices=False)
    curve = np.asarray(gc.eckart_young_curve(jnp.asarray(s[::-1])))  # order does not matter
    for r in (1, 3, 7):
        approx = (u[:, :r] * s[:r]) @ vt[:r]
        err = np.sum((np.asarray(m) - approx) ** 2) / np.sum(np.asarray(m) ** 2)
        assert curve[r - 1] == pytest.approx(err, rel=1e-4, abs=1e-6)
        assert float(gc.eckart_young_error(m, r)) == pytest.approx(err, rel=1e-3, abs=1e-6)


@given(seed=SEEDS, tol=st.floats(0.0, 0.9))
def test_rank_for_error_is_the_smallest_sufficient_rank(seed, tol):
    s = jnp.sort(jax.random.uniform(jax.random.key(seed), (10,)))[::-1]
    r = int(gc.rank_for_error(s, tol))
    curve = np.asarray(gc.eckart_young_curve(s))
    assert curve[r - 1] <= tol + 1e-6
    assert r == 1 or curve[r - 2] > tol


@pytest.mark.parametrize("shape", [(64, 128), (32, 32)])
def test_marchenko_pastur_matches_monte_carlo(shape):
    mp = gc.mp_error_curve(*shape, 8)
    mc = np.asarray(gc.mc_error_curve(*shape, 8, key=jax.random.key(0), samples=8))
    np.testing.assert_allclose(mp, mc, atol=0.015)
    assert np.all(np.diff(mp) < 0)


@given(ref=st.floats(2.0, 6.0), delta=st.floats(-1.0, 1.0))
def test_rank_for_entropy_holds_error_and_is_monotone(ref, delta):
    curve = jnp.asarray(gc.mp_error_curve(32, 32, 16))
    same = int(gc.rank_for_entropy(curve, 4, ref, ref))
    lower = int(gc.rank_for_entropy(curve, 4, ref, ref - abs(delta)))
    higher = int(gc.rank_for_entropy(curve, 4, ref, ref + abs(delta)))
    assert same == 4
    assert lower <= 4 <= higher
    target = float(curve[3]) * 2 ** (2 * abs(delta))
    assert float(curve[lower - 1]) <= target * (1 + 1e-5)


def test_window_controller_follows_entropy_trend():
    curves = np.stack([gc.mp_error_curve(32, 32, 8)] * 2)
    ctrl = gc.window_controller(curves, init_rank=4, window=5, warmup=5, hysteresis_bits=0.01)
    state = ctrl.init()
    update = jax.jit(ctrl.update)
    ranks = []
    for t in range(40):
        # stage 0: entropy falls 0.2 bits per window; stage 1: rises
        bits = jnp.array([6.0 - 0.04 * t, 4.0 + 0.04 * t])
        state = update(state, bits, t % 2 == 0)
        ranks.append(np.asarray(state.ranks))
    ranks = np.stack(ranks)
    assert np.all(ranks[:10] == 4)  # warmup, then the reference window keeps init_rank
    changes = np.nonzero(np.any(np.diff(ranks, axis=0) != 0, axis=1))[0] + 1
    assert np.all((changes + 1) % 5 == 0)  # decisions only at window ends
    assert ranks[-1, 0] < 4 < ranks[-1, 1]
    ratio = ranks[1:] / ranks[:-1]
    assert np.all((ratio >= 0.5) & (ratio <= 2.0))


def _edgc_steps(comp, grads_fn, steps):
    params = grads_fn(0)
    state = comp.init(jax.tree.map(lambda x: x[0], params))
    state8 = jax.tree.map(lambda x: jnp.broadcast_to(x, (8,) + x.shape), state)

    def step(g, s, k):
        g, s = jax.tree.map(lambda x: x[0], (g, s))
        out, s, stats = comp.update(g, s, key=k, axis_name="dp")
        return jax.tree.map(lambda x: x[None], (out, s)) + (stats,)

    f = jax.jit(
        jax.shard_map(
            step,
            mesh=MESH,
            in_specs=(P("dp"), P("dp"), P()),
            out_specs=(P("dp"), P("dp"), P()),
            check_vma=False,
        )
    )
    sh = NamedSharding(MESH, P("dp"))
    state8 = jax.device_put(state8, sh)
    history = []
    for t in range(steps):
        out, state8, stats = f(jax.device_put(grads_fn(t), sh), state8, jax.random.key(t))
        history.append((np.asarray(state8.controller.ranks)[0], float(stats.allreduce_bytes)))
    return history, state8, out


def test_edgc_lowers_rank_as_gradient_entropy_falls_on_8_devices():
    stage_fn = lambda path, shape: 0 if path[0].key == "a" else 1

    def grads_fn(t):
        k1, k2 = jax.random.split(jax.random.key(t))
        shrink = 0.7**t  # stage "a" gradients shrink: fixed-bin entropy falls
        return {
            "a": jax.random.normal(k1, (8, 32, 32)) * shrink,
            "b": jax.random.normal(k2, (8, 32, 32)),
        }

    comp = gc.edgc(
        num_stages=2,
        stage_fn=stage_fn,
        init_rank=4,
        max_rank=8,
        window=2,
        fraction=0.25,
        bins=64,
        hysteresis_bits=0.05,
    )
    history, state8, _ = _edgc_steps(comp, grads_fn, 12)
    ranks = np.stack([h[0] for h in history])
    assert ranks[-1, 0] < 4  # stage a compressed harder
    assert ranks[-1, 0] < ranks[-1, 1]
    # bytes follow the ranks actually used: r (n + m) 4 per matrix + the entropy pmean
    r_used = ranks[-1]
    assert history[-1][1] == pytest.approx(sum(r * 64 * 4 for r in r_used) + 8)


def test_edgc_identical_workers_equal_single_device_and_checkpoint_roundtrip(tmp_path):
    comp = gc.edgc(init_rank=2, max_rank=4, window=2, fraction=0.5, bins=32)
    g = {"w": jax.random.normal(jax.random.key(0), (32, 40))}
    history, state8, out8 = _edgc_steps(
        comp, lambda t: jax.tree.map(lambda x: jnp.stack([x] * 8), g), 3
    )
    single = jax.jit(lambda g, s, k: comp.update(g, s, key=k))
    state = comp.init(g)
    for t in range(3):
        out, state, _ = single(g, state, jax.random.key(t))
    assert_trees_close(jax.tree.map(lambda x: np.asarray(x)[0], out8), out, rtol=1e-4, atol=1e-5)
    # checkpoint save -> restore -> identical continuation
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "state", state)
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / "state", jax.eval_shape(lambda: state))
    restored = (
        type(state)(*jax.tree.leaves(restored, is_leaf=lambda x: False)) if False else restored
    )
    a = single(g, state, jax.random.key(9))
    b = single(
        g,
        jax.tree.unflatten(jax.tree.structure(state), jax.tree.leaves(restored)),
        jax.random.key(9),
    )
    assert_trees_close(a[:2], b[:2])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="fraction"):
        gc.edgc(fraction=0.0)
    with pytest.raises(ValueError, match="curve"):
        gc.edgc(curve="svd")
    with pytest.raises(ValueError, match="bins"):
        gc.fixed_edges(1.0, bins=1)
    with pytest.raises(ValueError, match="scale"):
        gc.fixed_edges(float("nan"))
    with pytest.raises(ValueError, match="stage_fn"):
        gc.edgc(num_stages=2).init({"w": jnp.zeros((32, 32))})
    with pytest.raises(ValueError, match="key"):
        comp = gc.edgc()
        comp.update({"w": jnp.ones((32, 32))}, comp.init({"w": jnp.zeros((32, 32))}))
    with pytest.raises(ValueError, match="max_rank"):
        gc.mp_error_curve(4, 8, 5)
    with pytest.raises(ValueError, match="tolerance"):
        gc.rank_for_error(jnp.ones((3,)), 1.5)
    with pytest.raises(ValueError, match="init_rank"):
        gc.window_controller(np.ones((1, 4)), init_rank=5)
