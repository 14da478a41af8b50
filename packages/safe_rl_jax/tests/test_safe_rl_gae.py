import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import safe_rl_jax as srl
from testkit import assert_trees_close

T, B = 7, 3


def _inputs(seed):
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(T, B)).astype(np.float32)
    v = rng.normal(size=(T, B)).astype(np.float32)
    boot = rng.normal(size=(B,)).astype(np.float32)
    term = (rng.random((T, B)) < 0.2).astype(np.float32)
    return r, v, boot, term


# discount and lambda traced: one compilation for every drawn example
_GAE = jax.jit(lambda r, v, boot, term, d, lam: srl.gae(r, v, boot, term, discount=d, lambda_=lam))


@given(seed=st.integers(0, 10_000), disc=st.floats(0.5, 1.0), lam=st.floats(0.0, 1.0))
def test_gae_matches_numpy_reference(seed, disc, lam):
    r, v, boot, term = _inputs(seed)
    fast = _GAE(r, v, boot, term, np.float32(disc), np.float32(lam))
    ref = srl.gae_reference(r, v, boot, term, discount=disc, lambda_=lam)
    assert_trees_close(tuple(np.asarray(x, np.float64) for x in fast), ref, rtol=1e-4, atol=1e-4)


def test_gae_matches_brax_compute_gae():
    from brax.training.agents.ppo.losses import compute_gae

    r, v, boot, term = _inputs(3)
    vs, adv = compute_gae(jnp.zeros_like(r), term, r, v, boot, lambda_=0.9, discount=0.97)
    ours, _ = srl.gae(r, v, boot, term, discount=0.97, lambda_=0.9)
    # brax returns the same λ-return targets (its advantages are one-step ones on top of them).
    assert_trees_close(ours, vs, rtol=1e-5, atol=1e-5)
    assert adv.shape == ours.shape


@given(seed=st.integers(0, 10_000))
def test_gae_lambda_one_is_discounted_return_minus_value(seed):
    r, v, boot, _ = _inputs(seed)
    tgt, adv = srl.gae(r, v, boot, np.zeros_like(r), discount=0.9, lambda_=1.0)
    ret = np.zeros((T, B))
    acc = boot.astype(np.float64)
    for t in reversed(range(T)):
        acc = r[t] + 0.9 * acc
        ret[t] = acc
    np.testing.assert_allclose(np.asarray(tgt), ret, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(adv), ret - v, rtol=1e-4, atol=1e-4)


def test_gae_vector_costs_and_grad():
    r, v, boot, term = _inputs(1)
    rk = np.stack([r, 2 * r], -1)
    vk = np.stack([v, v], -1)
    bk = np.stack([boot, boot], -1)
    _, adv = srl.gae(rk, vk, bk, term[..., None], discount=0.9, lambda_=0.8)
    _, a0 = srl.gae(r, v, boot, term, discount=0.9, lambda_=0.8)
    np.testing.assert_allclose(np.asarray(adv[..., 0]), np.asarray(a0), rtol=1e-6)
    g = jax.grad(lambda rr: jnp.sum(srl.gae(rr, v, boot, term, discount=0.9, lambda_=0.8)[1]))(r)
    assert g.shape == r.shape and bool(jnp.all(jnp.isfinite(g)))
