"""Models, diffusion maths, training (jit + grad, checkpoint continuation), data and quality."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from diffusion_serve_jax import (
    DiffusionModels,
    DiT,
    ddim_sample,
    ddim_timesteps,
    ddim_update,
    diffusion_trainer,
    edge_map,
    fit,
    frechet_distance,
    load_digits_dataset,
    make_schedule,
    q_sample,
)
from testkit import assert_trees_close

SCHED = make_schedule(10)


def _tiny():
    return DiffusionModels(width=16, depth=1, heads=2, rngs=nnx.Rngs(0))


def _data(n=32):
    x, y = load_digits_dataset()
    return {
        "images": jnp.asarray(x[:n]),
        "labels": jnp.asarray(y[:n]),
        "edges": jnp.asarray(edge_map(x[:n])),
    }


def test_digits_and_edges():
    x, y = load_digits_dataset()
    assert x.shape == (1797, 8, 8) and x.min() >= -1 and x.max() <= 1 and set(y) == set(range(10))
    with pytest.raises(ValueError, match="images: expected"):
        edge_map(x[0])


@given(st.floats(-1, 1), st.integers(0, 2**16))
def test_edge_map_range_and_constant_images(level, seed):
    img = np.random.default_rng(seed).uniform(-1, 1, (2, 8, 8)).astype(np.float32)
    e = edge_map(img)
    assert e.min() >= 0 and e.max() <= 1 + 1e-6
    np.testing.assert_allclose(edge_map(np.full((1, 8, 8), level, np.float32)), 0.0, atol=1e-6)


def test_dit_patchify_roundtrip_and_shapes():
    dit = DiT(width=16, depth=1, heads=2, cond_dim=16, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (3, 8, 8))
    np.testing.assert_array_equal(jax.jit(lambda x: dit.unpatchify(dit.patchify(x)))(x), x)
    out = jax.jit(lambda x, t, c: dit(x, t, c))(x, jnp.array([0, 3, 9]), jnp.zeros((3, 16)))
    assert out.shape == (3, 8, 8)
    with pytest.raises(ValueError, match="patch: must divide"):
        DiT(patch=3, rngs=nnx.Rngs(0))


@given(st.integers(0, 9), st.integers(0, 2**16))
def test_ddim_update_recovers_x0_with_true_noise(t, seed):
    """Property: given the exact noise, one DDIM step to t_prev=-1 returns the clean image."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    x0 = jax.random.uniform(k1, (2, 8, 8), minval=-1, maxval=1)
    noise = jax.random.normal(k2, (2, 8, 8))
    tt = jnp.full((2,), t)
    xt = q_sample(SCHED, x0, tt, noise)
    out = jax.jit(ddim_update)(SCHED, xt, noise, tt, jnp.full((2,), -1))
    np.testing.assert_allclose(out, x0, atol=2e-3)


def test_timestep_grid_errors():
    np.testing.assert_array_equal(ddim_timesteps(10, 4), [9, 6, 3, 0])
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(10, 11)
    with pytest.raises(ValueError, match="num_timesteps"):
        make_schedule(1)


def test_training_checkpoint_restore_continues_identically(tmp_path):
    models = _tiny()
    gd, params = nnx.split(models)
    tr = diffusion_trainer(gd, SCHED, batch_size=8)
    data = _data()
    key = jax.random.key(3)
    # committed like the update's outputs and orbax's restore, so every call hits one compile
    state0 = jax.device_put(tr.init(params), jax.devices()[0])
    state, losses = fit(tr, state0, data, 3, key=key)
    assert len(losses) == 3 and all(np.isfinite(losses))
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state.params, params)
    assert max(jax.tree.leaves(moved)) > 0  # the jitted update applied real gradients
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "ck", state)
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / "ck", jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
    a, la = fit(tr, state, data, 2, key=key)
    b, lb = fit(tr, restored, data, 2, key=key)
    assert_trees_close(b.params, a.params, rtol=1e-6)
    np.testing.assert_allclose(lb, la, rtol=1e-6)


def test_sampling_is_deterministic_and_bounded():
    models = _tiny()
    c = models.encoder(jnp.array([1, 2]))
    u = models.encoder(jnp.array([10, 10]))
    noise = jax.random.normal(jax.random.key(0), (2, 8, 8))
    f = jax.jit(lambda n: ddim_sample(models.dit, c, u, n, schedule=SCHED, steps=3))
    a, b = f(noise), f(noise)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 8, 8) and np.all(np.abs(a) <= 1.0 + 1e-5)


@given(st.integers(0, 2**16), st.floats(-3, 3))
def test_frechet_distance_properties(seed, shift):
    """Property: FD(a, a) = 0, FD >= 0, and a pure mean shift s adds D s^2."""
    a = np.random.default_rng(seed).normal(size=(200, 3))
    assert abs(frechet_distance(a, a)) < 1e-6
    np.testing.assert_allclose(frechet_distance(a + shift, a), 3 * shift**2, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="feats_a, feats_b"):
        frechet_distance(a, a[:, :2])
