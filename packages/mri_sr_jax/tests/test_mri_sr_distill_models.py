"""Guided UNet, progressive distillation and the student sampler (issue 11)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import mri_sr_jax as msr
from testkit import assert_trees_close

SCH = msr.cosine_schedule()
H = 16
LAYERS = ("enc1", "dec0")


@functools.cache
def nets():
    """(teacher, student, adapters) graphdef/params pairs, tiny."""
    t = msr.init_fast(lambda: msr.GuidedUNet(3, (8, 16), 8, rngs=nnx.Rngs(0)), seed=1)
    s = msr.init_fast(
        lambda: msr.GuidedUNet(3, (4, 8), 8, multiscale_cond=True, rngs=nnx.Rngs(0)), seed=2
    )
    a = msr.init_fast(lambda: msr.FeatureAdapters(s, t, LAYERS, rngs=nnx.Rngs(0)), seed=3)
    return nnx.split(t), nnx.split(s), nnx.split(a)


@functools.cache
def step_nets():
    """One-level (teacher, student, adapters) for the distillation step tests: every kind of
    layer of the UNet (embedding, input, block, mid, output) at half the compile time."""
    t = msr.init_fast(lambda: msr.GuidedUNet(3, (8,), 8, rngs=nnx.Rngs(0)), seed=1)
    s = msr.init_fast(lambda: msr.GuidedUNet(3, (4,), 8, rngs=nnx.Rngs(0)), seed=2)
    a = msr.init_fast(lambda: msr.FeatureAdapters(s, t, ("enc0", "mid"), rngs=nnx.Rngs(0)), seed=3)
    return nnx.split(t), nnx.split(s), nnx.split(a)


def batch(b=8, seed=0):
    rng = np.random.default_rng(seed)
    hr = jnp.asarray(rng.random((b, H, H)), jnp.float32)
    up = hr + 0.05 * jnp.asarray(rng.standard_normal((b, H, H)), jnp.float32)
    g = jnp.asarray(rng.standard_normal((b, H, H)), jnp.float32)
    return msr.make_batch(hr, up, (0.1 * g, 0.5 * g))


def test_unet_shapes_features_and_errors():
    (tg, tp), (sg, sp), _ = nets()
    b = batch(b=2)
    t = nnx.merge(tg, tp)
    out, feats = t(b.x0, b.cond, jnp.array([0.2, 0.9]), return_features=True)
    assert out.shape == (2, H, H, 1)
    assert tuple(feats) == t.feature_names == ("enc0", "enc1", "mid", "dec0")
    assert feats["enc1"].shape == (2, H // 2, H // 2, 16) and feats["dec0"].shape == (2, H, H, 8)
    with pytest.raises(ValueError, match="x_t"):
        t(jnp.zeros((1, 15, 15, 1)), jnp.zeros((1, 15, 15, 3)), jnp.ones((1,)))
    with pytest.raises(ValueError, match="feature_layers"):
        msr.FeatureAdapters(nnx.merge(sg, sp), t, ("enc7",), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="widths"):
        msr.GuidedUNet(3, (), rngs=nnx.Rngs(0))
    ct, cs = (msr.forward_cost(g, p, (1, H, H, 1), 3) for g, p in ((tg, tp), (sg, sp)))
    assert 0 < cs["flops"] < ct["flops"]


def test_sampler_scan_matches_python_loop_reference():
    (tg, tp), _, _ = nets()
    cond = batch(b=2).cond
    fast = jax.jit(lambda p, c, k: msr.sample_sr(tg, p, c, key=k, schedule=SCH, num_steps=3))(
        tp, cond, jax.random.key(4)
    )
    ref = msr.sample_sr_reference(tg, tp, cond, key=jax.random.key(4), schedule=SCH, num_steps=3)
    assert fast.shape == (2, H, H)
    assert_trees_close(fast, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="num_steps"):
        msr.sample_sr(tg, tp, cond, key=jax.random.key(0), schedule=SCH, num_steps=0)
    with pytest.raises(ValueError, match="cond"):
        msr.sample_sr(tg, tp, cond[0], key=jax.random.key(0), schedule=SCH, num_steps=2)


@functools.cache
def two_step_fns():
    (tg, tp), _, _ = nets()
    t, cond = nnx.merge(tg, tp), batch(b=2).cond

    def den(x, a):
        return t(x, cond, a)

    def x0(x, a):
        return jnp.sqrt(a)[:, None, None, None] * x - jnp.sqrt(1 - a)[:, None, None, None] * den(
            x, a
        )

    def both(z, ab_t, ab_m, ab_s):
        target = msr.teacher_target(den, z, ab_t, ab_m, ab_s, 2)
        z_mid = msr.ddim_step(z, x0(z, ab_t), ab_t, ab_m)
        two = msr.ddim_step(z_mid, x0(z_mid, ab_m), ab_m, ab_s)
        one = msr.teacher_target(den, z, ab_t, ab_m, ab_s, 1)
        return msr.ddim_step(z, target, ab_t, ab_s), two, one, x0(z, ab_t)

    return jax.jit(both)


@given(seed=st.integers(0, 10_000), i=st.integers(0, 3))
def test_two_step_target_makes_one_ddim_step_land_where_two_teacher_steps_land(seed, i):
    ab = msr.grid_alpha_bars(SCH, 4)
    mid = SCH.alpha_bar(jnp.asarray(1.0 - (i + 0.5) / 4))
    ab_t, ab_m, ab_s = (jnp.full((2,), a) for a in (ab[i], mid, ab[i + 1]))
    z = jax.random.normal(jax.random.key(seed), (2, H, H, 1))
    one_step, two_steps, target1, x0 = two_step_fns()(z, ab_t, ab_m, ab_s)
    assert_trees_close(one_step, two_steps, rtol=1e-3, atol=1e-3)
    assert_trees_close(target1, x0, rtol=1e-5, atol=1e-5)


@given(sigma=st.floats(0.0, 2.0), c=st.floats(-2.0, 2.0))
def test_curriculum_blur_and_levels(sigma, c):
    x = jax.random.normal(jax.random.key(0), (1, H, H, 1))
    blur = jax.jit(msr.blur_target)
    np.testing.assert_allclose(
        blur(jnp.full_like(x, c), jnp.float32(sigma)), c, rtol=1e-5, atol=1e-5
    )
    y = blur(x, jnp.float32(sigma))
    assert float(y.std()) <= float(x.std()) + 1e-6  # blurring never sharpens
    if sigma == 0.0:
        assert_trees_close(y, x, rtol=1e-6, atol=1e-6)
    sig = msr.curriculum_sigmas(10, 1.5)
    assert sig[0] == 1.5 and sig[-1] == 0.0 and np.all(np.diff(sig) < 0)
    levels = [msr.curriculum_level(s, 40, 10) for s in range(40)]
    assert levels[0] == 0 and levels[-1] == 9 and np.all(np.diff(levels) >= 0)
    assert msr.halving_schedule(8, 3) == [(8, 1), (4, 2), (2, 2)]


def placed(state):
    """The state on device 0, placed like a restored checkpoint (one compile for both)."""
    return jax.device_put(state, jax.devices()[0])


def _distiller(mesh=None, substeps=1, num_steps=4):
    (tg, _), (sg, _), (ag, _) = step_nets()
    return msr.make_distiller(
        sg,
        ag,
        tg,
        tg,
        optax.adam(1e-3),
        schedule=SCH,
        num_steps=num_steps,
        substeps=substeps,
        feature_weight=0.5,
        mesh=mesh,
    )


@functools.cache
def single_distiller():
    """The single-device distiller (one compile shared by the tests that train it)."""
    return _distiller()


def test_sharded_student_step_equals_single_device_and_grads_reach_every_parameter():
    (_, tp), (_, sp), (_, ap) = step_nets()
    mesh = jax.make_mesh((8,), ("data",))
    single, sharded = single_distiller(), _distiller(mesh)
    s1, m1 = single.update(placed(single.init(sp, ap)), tp, tp, batch(), jax.random.key(1), 0.5)
    s2, m2 = sharded.update(sharded.init(sp, ap), tp, tp, batch(), jax.random.key(1), 0.5)
    assert_trees_close(s1.params, s2.params, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
    assert np.isfinite(float(m1["loss"])) and float(m1["loss_feat"]) > 0
    # grad flows into the student and the feature adapters: every leaf moved
    before = {"student": sp, "adapters": ap}
    moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)), s1.params, before)
    assert all(jax.tree.leaves(moved))
    with pytest.raises(ValueError, match="batch"):
        sharded.update(sharded.init(sp, ap), tp, tp, batch(b=4), jax.random.key(1))


def test_checkpoint_resume_gives_identical_continuation(tmp_path):
    (_, tp), (_, sp), (_, ap) = step_nets()
    dist = single_distiller()
    keys = [jax.random.key(i) for i in range(3)]
    state = placed(dist.init(sp, ap))  # placed like the restored state: one compile
    for k in keys:
        state, _ = dist.update(state, tp, tp, batch(), k, 1.0)
    resumed = placed(dist.init(sp, ap))
    for k in keys[:2]:
        resumed, _ = dist.update(resumed, tp, tp, batch(), k, 1.0)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(2, args=ocp.args.StandardSave(resumed))
        mngr.wait_until_finished()
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, resumed)
        restored = mngr.restore(2, args=ocp.args.StandardRestore(target))
    restored, _ = dist.update(restored, tp, tp, batch(), keys[2], 1.0)
    assert int(restored.step) == 3
    assert_trees_close(restored.params, state.params, rtol=0, atol=0)


def test_distiller_bad_config_names_the_argument():
    (tg, _), (sg, _), (ag, _) = nets()
    for kwargs, name in (
        ({"substeps": 3}, "substeps"),
        ({"num_steps": 0}, "num_steps"),
        ({"feature_weight": -1.0}, "feature_weight"),
    ):
        args = {"num_steps": 2, "schedule": SCH} | kwargs
        with pytest.raises(ValueError, match=name):
            msr.make_distiller(sg, ag, tg, tg, optax.adam(1e-3), **args)
    with pytest.raises(ValueError, match="levels"):
        msr.curriculum_sigmas(0)
    with pytest.raises(ValueError, match="sigma_max"):
        msr.curriculum_sigmas(10, 5.0)
    with pytest.raises(ValueError, match="teacher_steps"):
        msr.halving_schedule(6, 3)
