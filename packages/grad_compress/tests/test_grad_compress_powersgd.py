"""PowerSGD: numpy multi-worker reference, orthogonalisation, masked ranks, warm-up, grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import P
from jax.sharding import NamedSharding
from jax.test_util import check_grads

import grad_compress as gc
from testkit import assert_trees_close

MESH = jax.make_mesh((8,), ("dp",))
PARAMS = {"b": jnp.zeros((24,)), "w": jnp.zeros((32, 40))}
SEEDS = st.integers(0, 2**16)


def grads_for(seed: int, workers: int = 8):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "b": jax.random.normal(k1, (workers, 24)),
        "w": jax.random.normal(k2, (workers, 32, 40)),
    }


def sharded_steps(comp, grads_seq, state, **kw):
    """Run `len(grads_seq)` updates on 8 devices; returns per-step outputs and the final states."""
    state8 = jax.tree.map(lambda x: jnp.broadcast_to(x, (8,) + x.shape), state)

    def step(g, s, k):
        g, s = jax.tree.map(lambda x: x[0], (g, s))
        out, s, stats = comp.update(g, s, key=k, axis_name="dp", **kw)
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
    outs = []
    for i, g in enumerate(grads_seq):
        out, state8, stats = f(jax.device_put(g, sh), state8, jax.random.key(i))
        outs.append((jax.tree.map(np.asarray, out), stats))
    return outs, jax.tree.map(np.asarray, state8)


def gram_schmidt_reference(p: np.ndarray) -> np.ndarray:
    q, r = np.linalg.qr(p)
    return q * np.sign(np.diag(r))[None, :]


def powersgd_reference(grads_seq: list[np.ndarray], q0: np.ndarray):
    """Vogels et al. Algorithm 1 for W workers (numpy, float64): yields the shared approximation."""
    workers = grads_seq[0].shape[0]
    errors = np.zeros_like(grads_seq[0], dtype=np.float64)
    q = q0.astype(np.float64)
    for g in grads_seq:
        ms = g.astype(np.float64) + errors
        p = gram_schmidt_reference(np.mean([ms[i] @ q for i in range(workers)], axis=0))
        q = np.mean([ms[i].T @ p for i in range(workers)], axis=0)
        approx = p @ q.T
        errors = ms - approx[None]
        yield approx, errors


def test_powersgd_matches_numpy_reference_on_8_devices():
    comp = gc.powersgd(2)
    state = comp.init(PARAMS)
    seq = [grads_for(s) for s in range(3)]
    outs, final = sharded_steps(comp, seq, state)
    ref = list(powersgd_reference([np.asarray(g["w"]) for g in seq], np.asarray(state.q[1])))
    for (out, stats), (approx, _), g in zip(outs, ref, seq, strict=True):
        np.testing.assert_allclose(out["w"][0], approx, rtol=2e-4, atol=2e-4)
        np.testing.assert_allclose(out["b"][0], np.asarray(g["b"]).mean(0), rtol=1e-5, atol=1e-6)
        assert float(stats.allreduce_bytes) == 2 * (32 + 40) * 4 + 24 * 4
        assert float(stats.allreduce_messages) == 2 + 1
    errors = ref[-1][1]
    np.testing.assert_allclose(final.error[1].reshape(8, 32, 40), errors, rtol=2e-3, atol=2e-3)


@given(seed=SEEDS)
def test_orthogonalize_gives_orthonormal_columns_spanning_p(seed):
    p = jax.random.normal(jax.random.key(seed), (20, 4))
    q = ORTHO(p)
    np.testing.assert_allclose(np.asarray(q.T @ q), np.eye(4), atol=1e-5)
    np.testing.assert_allclose(np.asarray(q), gram_schmidt_reference(np.asarray(p)), atol=1e-4)


ORTHO = jax.jit(gc.orthogonalize)
RANK1 = gc.powersgd(1, policy=gc.low_rank_policy(1, min_numel=16))
RANK1_UPDATE = jax.jit(lambda g, s: RANK1.update(g, s))


@given(seed=SEEDS)
def test_rank_one_matrices_are_sent_exactly(seed):
    ku, kv = jax.random.split(jax.random.key(seed))
    m = jnp.outer(jax.random.normal(ku, (32,)), jax.random.normal(kv, (40,)))
    out, state, _ = RANK1_UPDATE({"w": m}, RANK1.init({"w": m}))
    np.testing.assert_allclose(np.asarray(out["w"]), np.asarray(m), rtol=1e-4, atol=1e-4)
    assert float(jnp.max(jnp.abs(state.error[0]))) < 1e-3 * float(jnp.max(jnp.abs(m)))


def test_masked_rank_equals_static_rank():
    static = gc.powersgd(2, policy=gc.low_rank_policy(4))
    masked = gc.powersgd(2, max_rank=4)
    seq = [jax.tree.map(lambda x: x[0], grads_for(s, 1)) for s in range(3)]
    s1, s2 = static.init(PARAMS), masked.init(PARAMS)
    ranks = jnp.array([2, 2], jnp.int32)
    f1 = jax.jit(static.update)
    f2 = jax.jit(lambda g, s, r: masked.update(g, s, ranks=r))
    for g in seq:
        o1, s1, st1 = f1(g, s1)
        o2, s2, st2 = f2(g, s2, ranks)
        assert_trees_close(o2, o1, rtol=1e-5, atol=1e-5)
        assert float(st1.allreduce_bytes) == float(st2.allreduce_bytes)
    # switching rank up restarts the new columns from the fixed initial draw
    o3, s3, st3 = f2(seq[0], s2, jnp.array([4, 4], jnp.int32))
    assert float(st3.allreduce_bytes) == 4 * (32 + 40) * 4 + 24 * 4
    assert np.all(np.linalg.norm(np.asarray(s3.q[1]), axis=0) > 0)


def test_start_step_sends_full_gradients_first():
    comp = gc.powersgd(1, start_step=2)
    seq = [grads_for(s) for s in range(3)]
    outs, _ = sharded_steps(comp, seq, comp.init(PARAMS))
    for i in range(2):
        np.testing.assert_allclose(outs[i][0]["w"][0], np.asarray(seq[i]["w"]).mean(0), rtol=1e-5)
        assert float(outs[i][1].allreduce_bytes) == (32 * 40 + 24) * 4
    assert float(outs[2][1].allreduce_bytes) == (32 + 40) * 4 + 24 * 4


def test_identical_workers_equal_single_device():
    comp = gc.powersgd(2)
    g1 = jax.tree.map(lambda x: x[0], grads_for(5, 1))
    same = jax.tree.map(lambda x: jnp.broadcast_to(x, (8,) + x.shape), g1)
    outs, _ = sharded_steps(comp, [same], comp.init(PARAMS))
    single, _, _ = comp.update(g1, comp.init(PARAMS))
    assert_trees_close(jax.tree.map(lambda x: x[0], outs[0][0]), single, rtol=1e-4, atol=1e-5)


def test_grad_through_low_rank_round():
    m = jax.random.normal(jax.random.key(0), (12, 10))
    q = jax.random.normal(jax.random.key(1), (10, 2))
    f = jax.jit(lambda m: gc._powersgd.low_rank_round(m, q, 2, axis_name=None)[0])
    check_grads(f, (m,), order=1, modes=["rev"], atol=5e-2, rtol=5e-2)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="rank"):
        gc.powersgd(0)
    with pytest.raises(ValueError, match="rank"):
        gc.powersgd(4, max_rank=2)
    with pytest.raises(ValueError, match="start_step"):
        gc.powersgd(1, start_step=-1)
    comp = gc.powersgd(1)
    state = comp.init(PARAMS)
    with pytest.raises(ValueError, match="ranks"):
        comp.update(jax.tree.map(jnp.ones_like, PARAMS), state, ranks=jnp.ones((3,), jnp.int32))
    with pytest.raises(ValueError, match="grads"):
        comp.update({"b": jnp.ones((24,))}, state)
