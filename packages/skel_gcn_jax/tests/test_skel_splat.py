"""Kinematics-driven Gaussian splatting: fast renderer vs loops, covariance invariants, grads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import skel_gcn_jax as sg
from testkit import assert_trees_close

CFG = sg.SplatConfig(grid=6)
_render = jax.jit(sg.render_heatmaps, static_argnums=2)


def _positions(seed, shape=(2, 4, 25, 3)):
    return 0.4 * jax.random.normal(jax.random.key(seed), shape)


@pytest.mark.parametrize("separable", [False, True], ids=["exact", "separable"])
@pytest.mark.parametrize("isotropic", [False, True], ids=["velocity", "isotropic"])
def test_fast_renderer_matches_reference_loops(isotropic, separable):
    cfg = CFG._replace(isotropic=isotropic, separable=separable)
    pos = _positions(0, (1, 3, 25, 3))
    valid = (jax.random.uniform(jax.random.key(1), pos.shape[:-1]) > 0.2).astype(jnp.float32)
    fast = _render(pos, valid, cfg)
    ref = sg.render_heatmaps_reference(np.asarray(pos), np.asarray(valid), cfg)
    assert fast.shape == (1, 3, 3, 5, 6, 6)
    np.testing.assert_allclose(np.asarray(fast), ref, rtol=2e-4, atol=2e-4)


@given(arrays(np.float64, (3,), elements=st.floats(-0.3, 0.3)))
def test_covariance_stretches_along_velocity_only(v):
    sigma, stretch = 0.05, 2.0
    cov = np.asarray(
        sg.splat_covariances(jnp.asarray(v, jnp.float32), sigma=sigma, stretch=stretch), np.float64
    )
    speed = np.linalg.norm(v)
    np.testing.assert_allclose(cov, cov.T, atol=1e-7)
    eig = np.sort(np.linalg.eigvalsh(cov))
    np.testing.assert_allclose(eig[:2], sigma**2, rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(eig[2], (sigma + stretch * speed) ** 2, rtol=1e-3, atol=1e-6)
    if speed > 1e-3:
        u = v / speed
        np.testing.assert_allclose(
            cov @ u, (sigma + stretch * speed) ** 2 * u, rtol=1e-3, atol=1e-6
        )


def test_still_joints_render_isotropic():
    still = jnp.broadcast_to(_positions(2, (1, 1, 25, 3)), (1, 4, 25, 3))
    aniso = _render(still, None, CFG)
    iso = _render(still, None, CFG._replace(isotropic=True))
    assert_trees_close(aniso, iso, rtol=1e-5, atol=1e-6)


_velocity = jax.jit(sg.joint_velocity)


@given(arrays(np.float64, (3,), elements=st.floats(-0.5, 0.5)))
def test_velocity_is_translation_invariant(shift):
    moving = _positions(3)
    shifted = moving + jnp.asarray(shift, jnp.float32).reshape(1, 1, 1, 3)
    np.testing.assert_allclose(_velocity(shifted), _velocity(moving), atol=1e-5)


def test_heatmaps_are_nonnegative_and_bounded():
    hm = np.asarray(_render(_positions(4), None, CFG))
    assert hm.min() >= 0 and hm.max() <= 25 + 1e-5
    counts = np.bincount(sg.BODY_PARTS)
    assert np.all(hm.max(axis=(-1, -2)) <= counts[None, None, None, :] + 1e-5)


def test_velocity_anisotropy_changes_the_heatmaps():
    pos = _positions(5)
    assert not np.allclose(
        _render(pos, None, CFG), _render(pos, None, CFG._replace(isotropic=True))
    )


def test_separable_renderer_is_exact_for_isotropic_splats():
    pos = _positions(7)
    iso = CFG._replace(isotropic=True)
    assert_trees_close(
        _render(pos, None, iso._replace(separable=True)), _render(pos, None, iso), atol=1e-6
    )
    moving = _render(pos, None, CFG._replace(separable=True))
    assert not np.allclose(moving, _render(pos, None, CFG), atol=1e-3)  # it is an approximation


# one joint, three frames -v, 0, +v: the middle frame's splat moves with velocity v
ONE_JOINT = sg.SplatConfig(grid=48, groups=(0,))


@given(arrays(np.float64, (3,), elements=st.floats(-0.12, 0.12)))
def test_separable_splat_keeps_both_marginals_of_the_exact_splat(v):
    v = jnp.asarray(v, jnp.float32)
    pos = jnp.stack([-v, jnp.zeros(3), v])[:, None, :]  # (T=3, V=1, 3)
    exact = np.asarray(_render(pos, None, ONE_JOINT))[1, :, 0]  # (views, G, G)
    sep = np.asarray(_render(pos, None, ONE_JOINT._replace(separable=True)))[1, :, 0]
    for axis in (-1, -2):  # sum over columns -> v-marginal, over rows -> u-marginal
        np.testing.assert_allclose(sep.sum(axis), exact.sum(axis), rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("separable", [False, True], ids=["exact", "separable"])
def test_gradient_flows_through_rendering(separable):
    def loss(p):
        return jnp.sum(sg.render_heatmaps(p, None, CFG._replace(separable=separable)) ** 2)

    g = jax.jit(jax.grad(loss))(_positions(6))
    assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) > 0


def test_bad_splat_inputs_are_named():
    with pytest.raises(ValueError, match="positions"):
        sg.render_heatmaps(jnp.zeros((4, 25, 2)))
    with pytest.raises(ValueError, match="grid"):
        sg.render_heatmaps(_positions(0), None, CFG._replace(grid=1))
    with pytest.raises(ValueError, match="sigma"):
        sg.render_heatmaps(_positions(0), None, CFG._replace(sigma=0.0))
