"""Probabilistic topology: closed-form Bhattacharyya vs linalg, adjacency invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import skel_gcn_jax as sg
from testkit import assert_trees_close

_closed = jax.jit(sg.bhattacharyya_distance)
_ref = jax.jit(sg.bhattacharyya_distance_reference)


def _spd(a):
    return a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(3)


@given(
    arrays(np.float64, (4, 3, 3), elements=st.floats(-1, 1)),
    arrays(np.float64, (4, 3, 3), elements=st.floats(-1, 1)),
    arrays(np.float64, (4, 3), elements=st.floats(-2, 2)),
)
def test_closed_form_matches_linalg_reference(a, b, dm):
    s1, s2 = jnp.asarray(_spd(a), jnp.float32), jnp.asarray(_spd(b), jnp.float32)
    m1, m2 = jnp.zeros((4, 3)), jnp.asarray(dm, jnp.float32)
    d = _closed(m1, s1, m2, s2)
    assert_trees_close(d, _ref(m1, s1, m2, s2), rtol=2e-3, atol=2e-4)
    assert np.all(np.asarray(d) >= -1e-4)
    assert_trees_close(d, _closed(m2, s2, m1, s1), rtol=1e-5, atol=1e-6)


@given(st.floats(0.01, 1.0), arrays(np.float64, (3,), elements=st.floats(-1, 1)))
def test_equal_isotropic_covariances_give_scaled_squared_distance(sigma, dm):
    cov = jnp.asarray(sigma**2 * np.eye(3), jnp.float32)
    d = _closed(jnp.zeros(3), cov, jnp.asarray(dm, jnp.float32), cov)
    np.testing.assert_allclose(d, np.sum(dm**2) / (8 * sigma**2), rtol=1e-3, atol=1e-5)


def test_adjacency_is_symmetric_with_unit_diagonal():
    pos = 0.3 * jax.random.normal(jax.random.key(0), (2, 6, 25, 3))
    a = np.asarray(jax.jit(lambda p: sg.bhattacharyya_adjacency(*sg.joint_gaussians(p)))(pos))
    assert a.shape == (2, 25, 25)
    np.testing.assert_allclose(a, np.swapaxes(a, -1, -2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.diagonal(a, axis1=-2, axis2=-1), 1.0, rtol=1e-5)
    assert a.min() >= 0 and a.max() <= 1 + 1e-6


def test_joint_gaussians_match_numpy_statistics():
    pos = np.asarray(jax.random.normal(jax.random.key(1), (7, 25, 3)), np.float64)
    mean, cov = jax.jit(sg.joint_gaussians, static_argnames="min_var")(
        jnp.asarray(pos, jnp.float32), min_var=0.0
    )
    np.testing.assert_allclose(mean, pos.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov[4], np.cov(pos[:, 4].T, bias=True), rtol=1e-4, atol=1e-5)


def test_mixed_adjacency_rows_sum_to_one():
    phys = sg.physical_adjacency()
    prior = jax.random.uniform(jax.random.key(2), (25, 25)) + 0.01
    mixed = jax.jit(sg.mix_adjacency)(phys, prior, 0.3)
    np.testing.assert_allclose(np.asarray(mixed).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        jax.jit(sg.mix_adjacency)(phys, prior, 1.0),
        sg.normalize_adjacency(phys, mode="row"),
        rtol=1e-6,
    )


def test_bad_topology_inputs_are_named():
    with pytest.raises(ValueError, match="mean, cov"):
        sg.bhattacharyya_adjacency(jnp.zeros((25, 2)), jnp.zeros((25, 3, 3)))
    with pytest.raises(ValueError, match="temperature"):
        sg.bhattacharyya_adjacency(jnp.zeros((25, 3)), jnp.ones((25, 3, 3)), temperature=0.0)
