"""Element-wise compressors: references, error-feedback invariants, 8-device collectives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import P
from jax.sharding import NamedSharding

import grad_compress as gc
from testkit import assert_trees_close

MESH = jax.make_mesh((8,), ("dp",))
PARAMS = {"b": jnp.zeros((24,)), "w": jnp.zeros((32, 40))}
SEEDS = st.integers(0, 2**16)


def grads_for(seed: int, workers: int = 8):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "b": jax.random.normal(k1, (workers, 24)),
        "w": jax.random.normal(k2, (workers, 32, 40)) * jnp.linspace(0.1, 3.0, 40)[None, None, :],
    }


def run_sharded(comp, grads8, state, key):
    """One `update` on 8 devices, each with its own slice of `grads8` and a copy of `state`."""
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
    out = f(jax.device_put(grads8, sh), jax.device_put(state8, sh), key)
    return jax.tree.map(np.asarray, out)


COMPRESSORS = {
    "topk": gc.topk(0.1),
    "randomk": gc.randomk(0.1),
    "sign": gc.sign_sgd(),
    "qsgd_ef": gc.qsgd(15, error_feedback=True),
    "none": gc.no_compression(),
}
SINGLE = {
    name: jax.jit(lambda g, s, k, comp=comp: comp.update(g, s, key=k))
    for name, comp in COMPRESSORS.items()
}


def topk_reference(x: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros_like(x)
    idx = np.argsort(-np.abs(x), kind="stable")[:k]
    out[idx] = x[idx]
    return out


TOPK200 = gc._codecs.topk_codec(0.05)(200)
TOPK_ROUNDTRIP = jax.jit(lambda x: TOPK200.decode(*TOPK200.encode(x, None), 200))
SIGN_ROUNDTRIP = jax.jit(lambda v: gc.unpack_signs(gc.pack_signs(v), 37))


@given(seed=SEEDS)
def test_topk_matches_numpy_reference(seed):
    x = np.asarray(jax.random.normal(jax.random.key(seed), (200,)))
    np.testing.assert_allclose(np.asarray(TOPK_ROUNDTRIP(jnp.asarray(x))), topk_reference(x, 10))


@given(seed=SEEDS)
def test_sign_bits_roundtrip(seed):
    x = jax.random.normal(jax.random.key(seed), (37,))
    signs = SIGN_ROUNDTRIP(x)
    np.testing.assert_array_equal(np.asarray(signs), np.where(np.asarray(x) >= 0, 1.0, -1.0))
    assert gc.pack_signs(x).shape == (5,) and gc.pack_signs(x).dtype == jnp.uint8


def test_qsgd_is_unbiased_and_bounded():
    x = jax.random.normal(jax.random.key(0), (64,))
    codec = gc._codecs.qsgd_codec(7)(64)
    keys = jax.random.split(jax.random.key(1), 4000)
    dec = jax.jit(jax.vmap(lambda k: codec.decode(*codec.encode(x, k), 64)))(keys)
    norm = float(jnp.linalg.norm(x))
    # every entry is a multiple of norm / s within one level of x, and the mean is x
    assert float(jnp.max(jnp.abs(dec - x[None, :]))) <= norm / 7 + 1e-5
    np.testing.assert_allclose(np.asarray(dec.mean(0)), np.asarray(x), atol=4 * norm / 7 / 60)


@pytest.mark.parametrize("name", ["topk", "randomk", "sign", "qsgd_ef"])
@given(seed=SEEDS)
def test_error_feedback_conserves_the_signal(name, seed):
    """Single worker: what is sent plus what is remembered equals gradient plus old memory."""
    comp, update = COMPRESSORS[name], SINGLE[name]
    g = jax.tree.map(lambda x: x[0], grads_for(seed, 1))
    state = comp.init(PARAMS)
    out1, state1, _ = update(g, state, jax.random.key(seed))
    out2, state2, _ = update(g, state1, jax.random.key(seed + 1))
    w = g["w"].reshape(-1)
    np.testing.assert_allclose(
        np.asarray(out2["w"]).reshape(-1) + np.asarray(state2.error[1]),
        np.asarray(w + state1.error[1]),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(np.asarray(out1["b"]), np.asarray(g["b"]))  # vector untouched


@pytest.mark.parametrize("name", sorted(COMPRESSORS))
def test_sharded_equals_single_device_simulation(name):
    """8-device compressed all-reduce == mean over workers of each worker's own round trip."""
    comp = COMPRESSORS[name]
    grads8 = grads_for(3)
    state = comp.init(PARAMS)
    key = jax.random.key(7)
    out, states8, stats = run_sharded(comp, grads8, state, key)
    outs, errs = [], []
    for i in range(8):
        g = jax.tree.map(lambda x, i=i: x[i], grads8)
        if name == "qsgd_ef":  # private rounding: replay each device's folded per-leaf key
            codec = gc._codecs.qsgd_codec(15)(32 * 40)
            k = jax.random.fold_in(jax.random.split(key, 2)[1], i)
            w = g["w"].reshape(-1)
            dec = codec.decode(*codec.encode(w, k), w.size)
            outs.append({"b": g["b"], "w": dec.reshape(32, 40)})
            errs.append((state.error[0], w - dec))
        else:
            o, s, _ = SINGLE[name](g, state, key)
            outs.append(o)
            errs.append(s.error)
    expected = jax.tree.map(lambda *xs: np.mean(np.stack(xs), 0), *outs)
    assert_trees_close(jax.tree.map(lambda x: x[0], out), expected, rtol=1e-5, atol=1e-5)
    for i in range(8):
        assert_trees_close(
            jax.tree.map(lambda x, i=i: x[i], states8.error), errs[i], rtol=1e-5, atol=1e-5
        )
    for leaf in jax.tree.leaves(out):  # every device ends with the same mean
        np.testing.assert_allclose(leaf, np.broadcast_to(leaf[0], leaf.shape), rtol=1e-6)


def test_byte_accounting_matches_payloads():
    d = 32 * 40
    k = int(np.ceil(0.1 * d))
    cases = {
        "topk": (gc.topk(0.1), 0, 8 * k),
        "randomk": (gc.randomk(0.1), 4 * k, 0),
        "sign": (gc.sign_sgd(), 0, d // 8 + 4),
        "qsgd": (gc.qsgd(), 0, d + 4),
        "none": (gc.no_compression(), 4 * d, 0),
    }
    for name, (comp, ar, ag) in cases.items():
        g = jax.tree.map(lambda x: x[0], grads_for(0, 1))
        _, _, stats = comp.update(g, comp.init(PARAMS), key=jax.random.key(0))
        assert float(stats.allreduce_bytes) == ar + 4 * 24, name  # the bias goes uncompressed
        assert float(stats.allgather_bytes) == ag, name


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="ratio"):
        gc.topk(0.0)
    with pytest.raises(ValueError, match="levels"):
        gc.qsgd(300)
    with pytest.raises(TypeError, match="params"):
        gc.topk(0.1).init({"w": jnp.zeros((4, 4), jnp.int32)})
    with pytest.raises(ValueError, match="params"):
        gc.sign_sgd().init({})
    comp = gc.topk(0.1)
    state = comp.init(PARAMS)
    with pytest.raises(ValueError, match="grads"):
        comp.update({"b": jnp.zeros((24,)), "w": jnp.zeros((40, 33))}, state)
    with pytest.raises(ValueError, match="key"):
        gc.randomk(0.1).update(jax.tree.map(jnp.ones_like, PARAMS), gc.randomk(0.1).init(PARAMS))
