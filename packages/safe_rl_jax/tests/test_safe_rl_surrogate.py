from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import safe_rl_jax as srl
from safe_rl_jax._networks import gaussian_log_prob
from testkit import assert_trees_close

T, B, OBS, ACT = 6, 4, 3, 2


def _batch(seed, k, valid_share=0.8, scale=1.0):
    ks = jax.random.split(jax.random.key(seed), 5)
    obs = scale * jax.random.normal(ks[0], (T, B, OBS))
    act = jax.random.normal(ks[1], (T, B, ACT))
    valid = (jax.random.uniform(ks[2], (T, B)) < valid_share).astype(jnp.float32)
    return obs, act, valid, jax.random.normal(ks[3], (T, B)), jax.random.normal(ks[4], (T, B, k))


def _agent(hidden, k, seed):
    agent = srl.Agent(OBS, ACT, k, hidden=hidden, rngs=nnx.Rngs(seed))
    # a non-trivial log-std and head, so every block of the gradient matters
    agent.log_std[...] = jnp.linspace(-1.0, 0.3, ACT)
    agent.policy.head.kernel[...] = jax.random.normal(jax.random.key(seed + 7), (hidden[-1], ACT))
    return nnx.split(agent)


REF = jax.jit(srl.surrogate_products_reference, static_argnums=0)


@jax.jit
def _fast(graphdef_state, obs, act, valid, adv_r, adv_c, features=None):
    graphdef, params = graphdef_state
    model = nnx.merge(graphdef, params)
    return srl.surrogate_products(model, obs, act, valid, adv_r, adv_c, features=features)


REF_SPLIT = jax.jit(
    lambda *a, diag_floor: srl.surrogate_products_reference(*a, split=True, diag_floor=diag_floor),
    static_argnums=0,
    static_argnames="diag_floor",
)


@partial(jax.jit, static_argnames="diag_floor")
def _fast_split(graphdef_state, obs, act, valid, adv_r, adv_c, diag_floor):
    model = nnx.merge(*graphdef_state)
    return srl.surrogate_products(
        model, obs, act, valid, adv_r, adv_c, split=True, diag_floor=diag_floor
    )


_FEATURES = jax.jit(lambda gs, obs: srl.policy_features(nnx.merge(*gs), obs))


def test_manual_surrogate_products_equal_jacrev_reference():
    # one hidden layer and one cost here; two layers and three costs in the property test
    k = 1
    graphdef, params = _agent((8,), k, seed=1)
    batch = _batch(2, k)
    rdot_ref, gram_ref = REF(graphdef, params, *batch)
    rdot, gram = _fast((graphdef, params), *batch)
    assert rdot.shape == (k,) and gram.shape == (k, k)
    assert_trees_close((rdot, gram), (rdot_ref, gram_ref), rtol=1e-5, atol=1e-7)
    # the rollout's hidden activations give the same result as recomputing them
    feats = _FEATURES((graphdef, params), batch[0])
    assert_trees_close(_fast((graphdef, params), *batch, feats), (rdot, gram))
    assert float(jnp.abs(rdot).min()) > 0  # a non-degenerate check


_AGENT_2L = _agent((8, 5), 3, seed=3)  # built once for every drawn example


@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 3.0), share=st.floats(0.1, 1.0))
def test_manual_surrogate_products_property(seed, scale, share):
    # Equal to the reference for drawn data; the Gram matrix is symmetric positive
    # semi-definite; scaling one cost advantage by c scales its row of g_c·g_r by c.
    graphdef, params = _AGENT_2L
    obs, act, valid, adv_r, adv_c = _batch(seed, 3, share, scale)
    valid = valid.at[0, 0].set(1.0)
    rdot, gram = _fast((graphdef, params), obs, act, valid, adv_r, adv_c)
    rdot_ref, gram_ref = REF(graphdef, params, obs, act, valid, adv_r, adv_c)
    tol = 1e-5 * float(jnp.max(jnp.abs(gram_ref)))  # g_c·g_r may cancel to ~0
    np.testing.assert_allclose(rdot, rdot_ref, rtol=1e-4, atol=tol)
    np.testing.assert_allclose(gram, gram_ref, rtol=1e-4, atol=tol)
    np.testing.assert_allclose(gram, gram.T, rtol=1e-5, atol=1e-7)
    assert float(jnp.linalg.eigvalsh(gram).min()) > -1e-5 * float(jnp.trace(gram))
    scaled = adv_c.at[..., 1].multiply(-2.5)
    rdot2, _ = _fast((graphdef, params), obs, act, valid, adv_r, scaled)
    np.testing.assert_allclose(rdot2[1], -2.5 * rdot[1], rtol=1e-4, atol=tol)
    np.testing.assert_allclose(rdot2[0::2], rdot[0::2], rtol=1e-5, atol=tol)


def test_bad_surrogate_gradients_option_raises():
    env = srl.PointGoalHazards(episode_length=8)
    cfg = srl.PPOConfig(num_envs=8, num_minibatches=2, surrogate_gradients="vjp")
    with pytest.raises(ValueError, match="surrogate_gradients"):
        srl.make_trainer(env, srl.plo(), cfg)


@partial(jax.jit, static_argnums=0)
def _flat_grads(graphdef, params, obs, act, valid, adv_r, adv_c):
    """Per-env surrogate gradients [envs, 1 + k, P] (each env's valid steps averaged)."""
    k = adv_c.shape[-1]
    w = valid / jnp.maximum(valid.sum(0, keepdims=True), 1.0)

    def surrogates(p):
        mean, log_std = nnx.merge(graphdef, p).dist(obs)
        lp = gaussian_log_prob(mean, log_std, act)
        return jnp.concatenate([(w * lp * adv_r)[..., None], (w * lp)[..., None] * adv_c], -1)

    jac = jax.jacrev(lambda p: surrogates(p).sum(0))(params)  # [B, 1 + k] outputs
    leaves = [x.reshape(x.shape[0], k + 1, -1) for x in jax.tree.leaves(jac)]
    return jnp.concatenate(leaves, -1)


def test_split_products_cross_fit_and_average_to_the_pairwise_statistic():
    # Cross-fitting halves A, B of the envs: the hand-written split path equals its jacrev
    # reference (with its diagonal floor). Exact identity: with equal valid
    # counts, averaged over the 3 ways to halve 4 envs, ĝ^A·ĝ^B is the pairwise U-statistic
    # Σ_{i≠j} x_i·x_j / (N(N-1)) of the per-env gradients x_i, the unbiased estimate of the
    # products of the expected gradients; the whole-batch product adds Σ_i |x_i|² / N².
    graphdef, params = _agent((8,), 2, seed=5)
    obs, act, _, adv_r, adv_c = _batch(6, 2)
    valid = jnp.ones((T, B))
    ref = REF_SPLIT(graphdef, params, obs, act, valid, adv_r, adv_c, diag_floor=0.1)
    got = _fast_split((graphdef, params), obs, act, valid, adv_r, adv_c, diag_floor=0.1)
    assert_trees_close(got, ref, rtol=1e-5, atol=1e-6)
    x = _flat_grads(graphdef, params, obs, act, valid, adv_r, adv_c)  # [4, 3, P]
    pair = jnp.einsum("icp,jdp->ijcd", x, x)
    u_stat = (pair.sum((0, 1)) - jnp.einsum("iicd->cd", pair)) / (B * (B - 1))
    outs = []
    for order in ([0, 1, 2, 3], [0, 2, 1, 3], [0, 3, 1, 2]):
        perm = (obs, act, valid, adv_r, adv_c)
        perm = [y[:, jnp.array(order)] for y in perm]
        outs.append(_fast_split((graphdef, params), *perm, diag_floor=None))
    rdot, gram = jax.tree.map(lambda *a: sum(a) / 3, *outs)
    np.testing.assert_allclose(rdot, u_stat[1:, 0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gram, u_stat[1:, 1:], rtol=1e-4, atol=1e-6)
    full_rdot, full_gram = _fast((graphdef, params), obs, act, valid, adv_r, adv_c)
    whole = pair.sum((0, 1)) / B**2
    np.testing.assert_allclose(full_gram, whole[1:, 1:], rtol=1e-4, atol=1e-6)
    assert float(jnp.min(jnp.diagonal(full_gram) - jnp.diagonal(gram))) > 1e-4  # the bias
    with pytest.raises(ValueError, match="valid"):
        srl.surrogate_products(nnx.merge(graphdef, params), *[y[:, :3] for y in perm], split=True)
