"""Session 9: a homomorphic (log high-pass) gate input and region-specialised experts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import mri_sr_jax as msr
from testkit import assert_trees_close

SCH = msr.cosine_schedule()


def _double_box(x, window):
    """The reference low-pass: Flax's average pool that skips the padding, applied twice."""
    pool = functools.partial(
        nnx.avg_pool,
        window_shape=(window, window),
        strides=(1, 1),
        padding="SAME",
        count_include_pad=False,
    )
    return pool(pool(x))


@given(
    gain=st.floats(0.3, 3.0),
    tilt_y=st.floats(-0.5, 0.5),
    tilt_x=st.floats(-0.5, 0.5),
)
def test_log_highpass_removes_a_smooth_multiplicative_field(gain, tilt_y, tilt_x):
    """log|x| minus its double-box low-pass: a field whose log is affine (gain times an
    exponential ramp) cancels exactly away from the borders when eps = 0, and a constant
    gain cancels everywhere; the low-pass equals a padding-free average pool applied twice."""
    y = 0.2 + jax.random.uniform(jax.random.key(11), (1, 16, 16, 1))
    ramp = jnp.linspace(-1.0, 1.0, 16)
    field = gain * jnp.exp(tilt_y * ramp[:, None] + tilt_x * ramp[None, :])[None, ..., None]
    hp = jax.jit(msr.log_highpass, static_argnums=(1, 2))
    base = hp(y, 3, 0.0)
    moved = hp(field * y, 3, 0.0)
    np.testing.assert_allclose(moved[:, 2:-2, 2:-2], base[:, 2:-2, 2:-2], atol=2e-5)
    np.testing.assert_allclose(hp(gain * y, 3, 0.0), base, atol=2e-5)
    # the raw image moves with the field, the high-passed one (interior) does not
    assert float(jnp.abs(field * y - y).max()) > 0.05 or abs(gain - 1.0) < 0.05
    lx = jnp.log(y + 0.05)
    assert_trees_close(msr.log_highpass(y, 4), lx - _double_box(lx, 4), rtol=1e-5, atol=1e-5)


def test_log_gate_norm_feeds_the_gate_the_high_passed_input_and_bad_names_raise():
    """`MoEDiffSR(gate_local_norm=w, gate_norm="log")`: the feature extractor (hence the gate)
    sees `log_highpass(cond, w)`; the normalisation has no parameters, so the model equals a
    raw-input model with the same initialisation fed the high-passed input."""

    def moe(**kw):
        return msr.init_fast(
            lambda: msr.MoEDiffSR(
                1, expert_width=4, expert_depth=0, trunk_depth=1, feature_dim=8, emb_dim=8,
                rngs=nnx.Rngs(0), **kw,
            ),
            seed=0,
        )  # fmt: skip

    logm, raw = moe(gate_local_norm=4, gate_norm="log"), moe()
    assert msr.count_params(logm) == msr.count_params(raw)
    cond = 0.1 + jax.random.uniform(jax.random.key(12), (1, 16, 16, 1))
    ab = jnp.array([0.5])

    @jax.jit
    def features(state_log, state_raw):
        a = nnx.merge(nnx.graphdef(logm), state_log).features(cond, ab)
        b = nnx.merge(nnx.graphdef(raw), state_raw).features(msr.log_highpass(cond, 4), ab)
        c = nnx.merge(nnx.graphdef(raw), state_raw).features(cond, ab)
        return a, b, c

    a, b, c = features(nnx.state(logm), nnx.state(raw))
    assert_trees_close(a, b, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(a - c).max()) > 1e-3
    with pytest.raises(ValueError, match="gate_norm"):
        msr.MoEDiffSR(1, gate_local_norm=4, gate_norm="n4", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="local_norm_kind"):
        msr.FeatureExtractor(1, 8, local_norm=4, local_norm_kind="n4", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="window"):
        msr.log_highpass(cond, 0)


@given(amplitude=st.floats(0.1, 2.0), expert=st.integers(0, 2))
def test_region_task_loss_sees_only_its_region(amplitude, expert):
    """An error outside region i costs expert i's region task loss nothing, the same error
    inside it costs something; a full mask gives the whole-image task loss, an empty one 0."""
    ref = jax.random.uniform(jax.random.key(13), (2, 8, 8))
    noise = amplitude * jax.random.normal(jax.random.key(14), (2, 8, 8))
    mask = jnp.zeros((2, 8, 8)).at[:, :, :4].set(1.0)
    loss = jax.jit(msr.region_task_loss, static_argnums=0)
    outside = loss(expert, ref + noise * (1 - mask), ref, mask)
    inside = loss(expert, ref + noise * mask, ref, mask)
    assert float(outside) < 1e-6 < float(inside)
    whole = loss(expert, ref + noise, ref, jnp.ones_like(mask))
    task = (msr.edge_loss, msr.gradient_difference_loss, msr.fft_magnitude_loss)[expert]
    np.testing.assert_allclose(float(whole), float(task(ref + noise, ref)), rtol=1e-5)
    assert float(loss(expert, ref + noise, ref, jnp.zeros_like(mask))) == 0.0


class _LearnableExperts(nnx.Module):
    """A stand-in MoE whose expert outputs (1, 8, 8, 3) and per-expert gate logits (shared by
    every 4 x 4 token) are the parameters (what `moe_loss` needs of a model)."""

    patch = 4

    def __init__(self, outs, logits):
        self.outs = nnx.Param(outs)
        self.logits = nnx.Param(logits)

    def forward_all(self, x_t, cond, ab):
        g = jnp.broadcast_to(jax.nn.softmax(self.logits[...]), (1, 2, 2, 3))
        outs = self.outs[...]
        return msr.aggregate(outs, msr.gate_to_pixels(g, 4)), outs, g


def test_region_experts_train_each_expert_only_on_its_region():
    """`moe_loss(region_experts=True)`: expert i's own diffusion and task losses reach only
    region i's pixels (and the unlabelled ones, through the gate); without it every expert is
    trained everywhere (`region_tasks`: only the task losses follow the regions). With every
    pixel labelled, the "gated" objective leaves the gate
    untrained by the expert losses, while "both" still trains it through the aggregate."""
    x0 = jax.random.normal(jax.random.key(15), (1, 8, 8))
    outs = jnp.stack([x0 + 0.3, x0 - 0.2, x0 + 0.5], -1)
    labels = jnp.zeros((1, 8, 8), jnp.int32).at[:, :4].set(1).at[:, 4:, :4].set(2)
    regions = jax.nn.one_hot(labels - 1, 3)  # top: expert 0, bottom-left: 1, bottom-right: none
    batch = msr.make_batch(x0 * 0.1, jnp.zeros_like(x0), residual_scale=0.1, regions=regions)
    loss = functools.partial(
        msr.moe_loss,
        schedule=SCH,
        parameterisation="x0",
        gate_weight=0.0,
        diversity_weight=0.0,
        num_levels=1,
    )

    @functools.partial(jax.jit, static_argnames=("region_experts", "region_tasks", "objective"))
    def grads(o, batch, region_experts, region_tasks=False, objective="gated"):
        def f(o, lg):
            kw = {"region_experts": region_experts, "region_tasks": region_tasks}
            model = _LearnableExperts(o, lg)
            return loss(model, batch, jax.random.key(0), objective=objective, **kw)

        return jax.grad(f, argnums=(0, 1), has_aux=True)(o, jnp.array([0.2, -0.1, 0.0]))

    (g_outs, g_gate), _ = grads(outs, batch, True)
    g_outs = np.asarray(g_outs)
    top, bottom_left, bottom_right = (slice(0, 4), slice(None)), (4, slice(0, 4)), (4, 6)
    assert np.abs(g_outs[0][top][..., 1:]).max() == 0.0  # experts 1, 2 untouched in region 0
    assert np.abs(g_outs[0][top][..., 0]).min() > 0.0
    assert np.abs(g_outs[0][bottom_left][..., [0, 2]]).max() == 0.0
    assert np.abs(g_outs[0][bottom_left][..., 1]).min() > 0.0
    assert np.abs(g_outs[0][bottom_right]).min() > 0.0  # unlabelled: the gate routes all three
    plain = np.asarray(grads(outs, batch, False)[0][0])
    assert np.abs(plain[0][top][..., 1:]).min() > 0.0
    full = batch._replace(regions=jax.nn.one_hot(jnp.zeros((1, 8, 8), jnp.int32), 3))
    np.testing.assert_array_equal(np.asarray(grads(outs, full, True)[0][1]), 0.0)
    assert np.abs(np.asarray(grads(outs, full, True, objective="both")[0][1])).max() > 1e-4
    # `region_tasks=True`: only the task losses follow the regions; errors placed outside each
    # expert's region cost no task loss there, but do cost the region-blind task losses
    off = jnp.stack([x0 + 0.4 * (1.0 - regions[..., i]) * x0 for i in range(3)], -1)
    assert float(grads(off, batch, False, True)[1]["task"]) < 1e-6
    assert float(grads(off, batch, False)[1]["task"]) > 1e-6
    with pytest.raises(ValueError, match="batch.regions"):
        loss(
            _LearnableExperts(outs, jnp.zeros(3)),
            batch._replace(regions=None),
            jax.random.key(0),
            region_experts=True,
        )
