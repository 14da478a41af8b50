"""MoEDiff-SR modules and training: aggregation, gate, losses, jit/grad, sharding, checkpoints."""

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


def tiny_moe(seed=0, trunk_depth=1):
    """3 expert heads on a one-block shared trunk (the experiment's architecture);
    `trunk_depth=0`: 3 independent one-block expert denoisers."""
    return msr.init_fast(
        lambda: msr.MoEDiffSR(
            1,
            expert_width=4,
            expert_depth=1 - trunk_depth,
            trunk_depth=trunk_depth,
            feature_dim=8,
            patch_sizes=(4, 8),
            emb_dim=8,
            rngs=nnx.Rngs(0),
        ),
        seed=seed,
    )


def tiny_batch(seed=0, b=8):
    rng = np.random.default_rng(seed)
    hr = jnp.asarray(rng.random((b, H, H)), jnp.float32)
    up = hr + 0.05 * jnp.asarray(rng.standard_normal((b, H, H)), jnp.float32)
    return msr.make_batch(hr, up, residual_scale=0.1)


@functools.cache
def moe_loss_fn():
    return functools.partial(msr.moe_loss, schedule=SCH, parameterisation="v")


@given(seed=st.integers(0, 1000))
def test_aggregate_matches_reference_and_gate_is_a_distribution(seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    outs = jax.random.normal(k1, (2, 8, 8, 3))
    gate_tokens = jax.nn.softmax(jax.random.normal(k2, (2, 2, 2, 3)), -1)
    g = msr.gate_to_pixels(gate_tokens, 4)
    assert g.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(g.sum(-1), 1.0, rtol=1e-6)
    assert_trees_close(
        jax.jit(msr.aggregate)(outs, g), msr.aggregate_reference(outs, g), rtol=1e-5, atol=1e-6
    )
    gl = msr.gate_to_pixels(gate_tokens, 4, "linear")
    assert gl.shape == (2, 8, 8, 3) and float(gl.min()) >= 0.0
    np.testing.assert_allclose(gl.sum(-1), 1.0, rtol=1e-5)


def test_moe_forward_shapes_and_token_level_gate():
    model = tiny_moe(trunk_depth=0)
    b = tiny_batch(b=2)
    # one compile instead of op-by-op eager compiles
    agg, outs, gate = jax.jit(lambda: model.forward_all(b.x0, b.cond, jnp.array([0.3, 0.8])))()
    assert agg.shape == (2, H, H, 1) and outs.shape == (2, H, H, 3) and gate.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(gate.sum(-1), 1.0, rtol=1e-5)
    # with identical experts the gate cannot change the output
    same = msr.aggregate(jnp.repeat(outs[..., :1], 3, -1), msr.gate_to_pixels(gate, 4))
    np.testing.assert_allclose(same, outs[..., :1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="x_t"):
        model(jnp.zeros((1, 10, 10, 1)), jnp.zeros((1, 10, 10, 1)), jnp.ones((1,)))


def test_shared_trunk_experts_differ_only_in_their_heads_and_see_the_features():
    def build(**kw):
        return msr.init_fast(
            lambda: msr.MoEDiffSR(
                1,
                expert_width=4,
                expert_depth=0,
                trunk_depth=1,
                feature_dim=8,
                patch_sizes=(4, 8),
                emb_dim=8,
                gate_upsample="linear",
                rngs=nnx.Rngs(0),
                **kw,
            )
        )

    model = build(fuse_features=True)
    b = tiny_batch(b=2)
    ab = jnp.array([0.3, 0.8])
    model_gd = nnx.graphdef(model)
    # one compile for the three forward passes below instead of op-by-op eager compiles
    forward = jax.jit(lambda st: nnx.merge(model_gd, st).forward_all(b.x0, b.cond, ab))
    agg, outs, gate = forward(nnx.state(model))
    assert agg.shape == (2, H, H, 1) and outs.shape == (2, H, H, 3) and gate.shape == (2, 4, 4, 3)
    # copy expert 0's head into the others: the shared trunk then gives identical experts
    for e in model.experts[1:]:
        e.out.kernel[...] = model.experts[0].out.kernel[...]
    outs_same = forward(nnx.state(model))[1]
    np.testing.assert_allclose(outs_same[..., 1:], jnp.repeat(outs_same[..., :1], 2, -1))
    # the trunk sees the transformer features: zeroing their projection changes every expert
    model.trunk.fuse.kernel[...] = jnp.zeros_like(model.trunk.fuse.kernel[...])
    assert float(jnp.abs(forward(nnx.state(model))[1] - outs_same).max()) > 1e-4
    # experts with their own narrow blocks: a residual bottleneck branch on the trunk
    narrow = build(head_width=6)
    narrow_deep = msr.init_fast(  # init_fast: eager per-parameter init costs ~12 s CPU
        lambda: msr.MoEDiffSR(
            1, expert_width=4, expert_depth=1, trunk_depth=1, feature_dim=8, emb_dim=8,
            head_width=6, rngs=nnx.Rngs(0),
        )
    )  # fmt: skip
    head = narrow_deep.experts[2]
    assert head.down.kernel.shape == (1, 1, 4, 6) and head.up.kernel.shape == (1, 1, 6, 4)
    assert head.blocks[0].c1.kernel.shape == (3, 3, 6, 6) and head.out.kernel.shape[2] == 4
    shapes = jax.eval_shape(lambda: narrow_deep.forward_all(b.x0, b.cond, ab))
    assert shapes[0].shape == (2, H, H, 1) and shapes[1].shape == (2, H, H, 3)
    assert build().experts[0].down is None
    # each head adds its down (4 -> 6) and up (6 -> 4) projections
    assert msr.count_params(narrow) - msr.count_params(build()) == 3 * (4 * 6 + 6 + 6 * 4 + 4)

    plain = nnx.clone(head)  # the same head with a zero `up` projection
    plain.up.kernel[...] = jnp.zeros_like(plain.up.kernel[...])
    plain.up.bias[...] = jnp.zeros_like(plain.up.bias[...])
    head_gd = nnx.graphdef(head)

    @jax.jit
    def head_out(state, h, emb):
        m = nnx.merge(head_gd, state)
        return m(h, emb), m.out(nnx.silu(h))

    trunk_h = jax.random.normal(jax.random.key(1), (1, 8, 8, 4))
    emb = jax.random.normal(jax.random.key(2), (1, 8))
    with_branch, without = head_out(nnx.state(head), trunk_h, emb)
    assert float(jnp.abs(with_branch - without).max()) > 1e-4
    # a zero `up` projection leaves the trunk's features unchanged: out(silu(h))
    assert_trees_close(*head_out(nnx.state(plain), trunk_h, emb), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="head_width"):
        msr.MoEDiffSR(1, head_width=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="head_width"):
        msr.MoEDiffSR(1, trunk_depth=1, head_width=-1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="fuse_features"):
        msr.MoEDiffSR(1, fuse_features=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="gate_upsample"):
        msr.MoEDiffSR(1, gate_upsample="cubic", rngs=nnx.Rngs(0))


def test_param_count_closed_form_and_fast_init_statistics():
    m = msr.init_fast(lambda: msr.ConvDenoiser(2, 8, 2, 8, rngs=nnx.Rngs(0)), seed=3)
    assert msr.count_params(m) == msr.conv_denoiser_params(2, 8, 2, 8)
    w = msr.conv_denoiser_width(2, 2, 8, msr.conv_denoiser_params(2, 8, 2, 8) + 3)
    assert w == 8
    with pytest.raises(ValueError, match="params"):
        msr.conv_denoiser_width(2, 2, 8, 0)
    k = np.asarray(m.blocks[0].c1.kernel[...])
    assert abs(k.std() * np.sqrt(9 * 8) - 1.0) < 0.15
    assert float(jnp.abs(m.blocks[0].c1.bias[...]).max()) == 0.0


@given(gate_logits=st.lists(st.floats(-3, 3), min_size=3, max_size=3))
def test_load_balance_is_zero_only_for_uniform_usage(gate_logits):
    g = jax.nn.softmax(jnp.asarray(gate_logits))[None, None, None]
    val = float(msr.load_balance(g))
    assert val >= -1e-6
    assert (val < 1e-5) == bool(np.ptp(gate_logits) < 1e-3)


def test_gate_targets_prefer_the_expert_closest_to_the_truth():
    x0 = jax.random.normal(jax.random.key(0), (1, 8, 8))
    experts = jnp.stack([x0 + 0.01, -x0, jnp.ones_like(x0)], -1)
    t = msr.gate_targets(experts, x0, 4)
    assert t.shape == (1, 2, 2, 3) and bool(jnp.all(jnp.argmax(t, -1) == 0))


def test_region_bonus_moves_the_gate_target_towards_the_tokens_region():
    """Identical experts (equal similarities): the target is softmax(beta * region fraction),
    so a token wholly in region i gives expert i e^beta times the others' weight; a token in
    no region stays uniform; beta = 0 ignores the masks; a missing mask raises."""
    x0 = jax.random.normal(jax.random.key(0), (1, 8, 8))
    experts = jnp.stack([x0, x0, x0], -1)
    labels = jnp.zeros((1, 8, 8), jnp.int32).at[:, :4, :4].set(2).at[:, 4:, 4:].set(1)
    regions = jax.nn.one_hot(labels - 1, 3)  # label 0 = no region
    np.testing.assert_allclose(msr.token_fractions(regions, 4)[0, 0, 0], [0.0, 1.0, 0.0])
    t = msr.gate_targets(experts, x0, 4, regions=regions, region_bonus=2.0)
    np.testing.assert_allclose(t[0, 0, 0], np.exp([0, 2, 0]) / (2 + np.exp(2)), rtol=1e-5)
    np.testing.assert_allclose(t[0, 1, 1], np.exp([2, 0, 0]) / (2 + np.exp(2)), rtol=1e-5)
    np.testing.assert_allclose(t[0, 0, 1], np.full(3, 1 / 3), rtol=1e-5)
    same = msr.gate_targets(experts, x0, 4, regions=regions, region_bonus=0.0)
    np.testing.assert_allclose(same, msr.gate_targets(experts, x0, 4), rtol=1e-6)
    with pytest.raises(ValueError, match="regions"):
        msr.gate_targets(experts, x0, 4, region_bonus=1.0)
    with pytest.raises(ValueError, match="region_bonus"):
        msr.gate_targets(experts, x0, 4, regions=regions, region_bonus=-1.0)


def test_task_losses_vanish_at_the_truth():
    x = jax.random.normal(jax.random.key(1), (2, 8, 8))
    fns = (msr.edge_loss, msr.gradient_difference_loss, msr.fft_magnitude_loss)
    # one compile instead of op-by-op eager compiles
    at_truth, off_truth = jax.jit(
        lambda x: ([f(x, x) for f in fns], [f(x + 0.3 * x**2, x) for f in fns])
    )(x)
    for a, b in zip(at_truth, off_truth, strict=True):
        assert float(a) == 0.0 and float(b) > 0.0


OPT = optax.sgd(0.05, momentum=0.9)  # plain SGD: Adam would amplify the float-summation
# noise of gradients that are exactly zero in theory (attention key biases)


@functools.cache
def trainers():
    """The MoE trainer (one compile shared by the tests that train it)."""
    gd, params = nnx.split(tiny_moe())
    return msr.make_trainer(gd, moe_loss_fn(), OPT), None, params


@functools.cache
def conv_trainers():
    """A small single-denoiser trainer, single-device and sharded over 8 devices."""
    model = msr.init_fast(lambda: msr.ConvDenoiser(1, 4, 1, 8, rngs=nnx.Rngs(0)))
    gd, params = nnx.split(model)
    loss = functools.partial(msr.diffusion_loss, schedule=SCH, parameterisation="eps")
    mesh = jax.make_mesh((8,), ("data",))
    return msr.make_trainer(gd, loss, OPT), msr.make_trainer(gd, loss, OPT, mesh=mesh), params


def test_jit_grad_step_and_sharded_training_equals_single_device():
    assert len(jax.devices()) == 8
    single, sharded, params = conv_trainers()
    s1 = single.init(jax.tree.map(jnp.copy, params))
    s2 = sharded.init(jax.tree.map(jnp.copy, params))
    batch = tiny_batch()
    for i in range(2):
        s1, m1 = single.update(s1, batch, jax.random.key(i))
        s2, m2 = sharded.update(s2, batch, jax.random.key(i))
    assert_trees_close(s2.params, s1.params, rtol=2e-4, atol=2e-5)
    moved = [
        bool(np.any(np.asarray(a) != np.asarray(b)))
        for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(params), strict=True)
    ]
    assert all(moved)  # gradients reach every parameter
    with pytest.raises(ValueError, match="batch"):
        sharded.update(s2, tiny_batch(b=4), jax.random.key(0))


def placed(state):
    """The state on device 0, placed like a restored checkpoint: one compile of the step
    serves fresh and restored states (an unplaced state compiles it a second time)."""
    return jax.device_put(state, jax.devices()[0])


def test_checkpoint_restore_gives_identical_continuation(tmp_path):
    trainer, _, params = trainers()
    state = placed(trainer.init(jax.tree.map(jnp.copy, params)))
    batch = tiny_batch()
    state, _ = trainer.update(state, batch, jax.random.key(0))
    mngr = ocp.CheckpointManager(tmp_path / "ckpt")
    mngr.save(1, args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = mngr.restore(1, args=ocp.args.StandardRestore(abstract))
    mngr.close()
    b, _ = trainer.update(restored, batch, jax.random.key(1))
    a, _ = trainer.update(state, batch, jax.random.key(1))
    assert_trees_close(b, a, rtol=1e-6)
    assert int(b.step) == 2


def test_training_reduces_loss_and_sampling_returns_finite_residuals():
    trainer, _, params = trainers()
    state = placed(trainer.init(jax.tree.map(jnp.copy, params)))
    batch = tiny_batch()
    losses = []
    for _ in range(12):
        state, m = trainer.update(state, batch, jax.random.key(100))
        losses.append(float(m["loss"]))
    assert losses[-1] < losses[0]
    moved = [
        bool(np.any(np.asarray(a) != np.asarray(b)))
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params), strict=True)
    ]
    assert sum(moved) > 0.9 * len(moved)  # MoE gradients reach (almost) every parameter
    gd, _ = nnx.split(tiny_moe())
    r = msr.sample_residual(
        gd, state.params, batch.cond[:2], key=jax.random.key(0), schedule=SCH, num_steps=2
    )
    assert r.shape == (2, H, H, 1) and bool(jnp.all(jnp.isfinite(r)))
    with pytest.raises(ValueError, match="sampler"):
        msr.sample_residual(
            gd, state.params, batch.cond, key=jax.random.key(0), schedule=SCH, sampler="euler"
        )


def test_make_batch_errors():
    with pytest.raises(ValueError, match="hr, lr_up"):
        msr.make_batch(jnp.zeros((2, 4, 4)), jnp.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="residual_scale"):
        msr.make_batch(jnp.zeros((2, 4, 4)), jnp.zeros((2, 4, 4)), residual_scale=0.0)


def test_gate_target_temperature_tracks_the_spread_between_experts():
    """The "experts" MAD temperature sharpens the target when experts differ only a little,
    while the pooled MAD (dominated by how hard each token is) leaves it nearly uniform."""
    x0 = jax.random.normal(jax.random.key(2), (2, 8, 8))
    hard = jnp.where(jnp.arange(8)[None, :, None] < 4, 1.0, 3.0)  # tokens of varying difficulty
    noise = jax.random.normal(jax.random.key(3), (2, 8, 8, 1))
    experts = x0[..., None] + hard[..., None] * noise * jnp.array([[[[0.9, 1.0, 1.1]]]])
    sharp, flat = jax.jit(  # one compile instead of op-by-op eager compiles
        lambda e, x: (msr.gate_targets(e, x, 4), msr.gate_targets(e, x, 4, temperature="pooled"))
    )(experts, x0)
    assert bool(jnp.all(jnp.argmax(sharp, -1) == 0))
    assert float(sharp[..., 0].mean()) > float(flat[..., 0].mean()) + 0.1
    with pytest.raises(ValueError, match="temperature"):
        msr.gate_targets(experts, x0, 4, temperature="global")


def test_scaled_input_ignores_the_noise_at_t_one():
    net = msr.init_fast(lambda: msr.ConvDenoiser(1, 4, 1, 8, scale_input=True, rngs=nnx.Rngs(0)))
    plain = msr.init_fast(lambda: msr.ConvDenoiser(1, 4, 1, 8, rngs=nnx.Rngs(0)))
    cond = jax.random.uniform(jax.random.key(4), (2, 8, 8, 1))
    x1, x2 = jax.random.normal(jax.random.key(5), (2, 2, 8, 8, 1))
    ab0, ab = jnp.zeros((2,)), jnp.full((2,), 0.5)

    @jax.jit  # one compile instead of op-by-op eager compiles
    def outputs():
        return (
            net(x1, cond, ab0),
            net(x2, cond, ab0),
            net(x1, cond, ab),
            net(x2, cond, ab),
            (plain(x1, cond, ab0) - plain(x2, cond, ab0)),
        )

    n10, n20, n1, n2, plain_gap = outputs()
    assert_trees_close(n10, n20, rtol=1e-6)
    assert float(jnp.abs(n1 - n2).max()) > 1e-3
    assert float(jnp.abs(plain_gap).max()) > 1e-3


def test_sample_averaging_keeps_images_apart():
    """x0-network returning its conditioning: any number of averaged samples gives it back
    image by image (a wrong reshape would mix the batch), and so do the DDPM and ODE
    samplers; bad counts raise."""

    class Echo(nnx.Module):
        def __call__(self, x_t, cond, alpha_bar):
            return cond

    gd, params = nnx.split(Echo())
    cond = jax.random.uniform(jax.random.key(6), (3, 8, 8, 1))
    out = msr.sample_residual(
        gd,
        params,
        cond,
        key=jax.random.key(0),
        schedule=SCH,
        num_steps=1,
        parameterisation="x0",
        num_samples=4,
    )
    assert_trees_close(out, cond, rtol=1e-6)
    for sampler in ("ddpm", "ode"):  # every sampler ends on the network's x0 estimate
        out = msr.sample_residual(
            gd,
            params,
            cond,
            key=jax.random.key(0),
            schedule=SCH,
            sampler=sampler,
            num_steps=2,
            parameterisation="x0",
        )
        assert_trees_close(out, cond, rtol=1e-6)
    with pytest.raises(ValueError, match="num_samples"):
        msr.sample_residual(gd, params, cond, key=jax.random.key(0), schedule=SCH, num_samples=0)


def test_region_term_scores_each_expert_inside_its_own_region():
    """With expert i exact inside region i only, the region term is zero; a region mask
    that disagrees makes it positive. Missing masks raise."""
    x0 = jax.random.normal(jax.random.key(7), (1, 8, 8))
    labels = jnp.arange(64).reshape(1, 8, 8) % 3
    regions = jax.nn.one_hot(labels, 3)
    wrong = jnp.stack([jnp.where(labels == i, x0, x0 + 1.0) for i in range(3)], -1)
    batch = msr.make_batch(
        x0 * 0.1, jnp.zeros_like(x0), residual_scale=0.1, regions=jnp.roll(regions, 1, -1)
    )

    # the model's experts are replaced by the fixed outputs through a stub
    class Stub(nnx.Module):
        patch = 4

        def forward_all(self, x_t, cond, ab):
            gate = jnp.broadcast_to(jnp.array([0.6, 0.2, 0.2]), (1, 2, 2, 3))
            return wrong.mean(-1, keepdims=True), wrong, gate

    loss = functools.partial(msr.moe_loss, schedule=SCH, parameterisation="x0", region_weight=1.0)

    def run(b, **kwargs):  # one compile per setting instead of op-by-op eager compiles
        return jax.jit(lambda b: loss(Stub(), b, jax.random.key(0), **kwargs)[1])(b)

    bad = run(batch)
    good = run(batch._replace(regions=regions))
    assert float(good["region"]) < 1e-6 and float(bad["region"]) > 1.0
    with pytest.raises(ValueError, match="regions"):
        loss(Stub(), batch._replace(regions=None), jax.random.key(0))
    with pytest.raises(ValueError, match="regions"):
        loss(Stub(), batch._replace(regions=None), jax.random.key(0), region_gate=1.0)
    # a region-informed gate target changes the gate's cross-entropy
    plain = run(batch._replace(regions=regions), region_weight=0.0)
    ruled = run(batch._replace(regions=regions), region_gate=3.0)
    assert abs(float(ruled["gate_ce"]) - float(plain["gate_ce"])) > 1e-3
    with pytest.raises(ValueError, match="regions"):
        msr.make_batch(x0, x0, regions=regions[..., 0])


@given(scale=st.floats(0.1, 3.0), shift=st.floats(-1.0, 1.0))
def test_output_similarity_is_largest_for_identical_experts(scale, shift):
    """log(1 + mean max cos / k): identical (or positively rescaled) experts give
    log(1 + 1/k), experts with opposite signs less; one expert gives zero."""
    x = jax.random.normal(jax.random.key(8), (1, 8, 8))
    same = jnp.stack([x, scale * x, 2 * x], -1)
    apart = jnp.stack([x, -x, jnp.roll(x, 3, 1) + shift], -1)
    np.testing.assert_allclose(float(msr.output_similarity(same, 4)), np.log1p(1 / 3), rtol=1e-5)
    assert float(msr.output_similarity(apart, 4)) < np.log1p(1 / 3) - 0.01
    assert float(msr.output_similarity(same[..., :1], 4)) == 0.0


class _FixedExperts(nnx.Module):
    """A stand-in MoE: fixed expert outputs `outs [1, 8, 8, 3]`, one learnable gate logit per
    expert shared by every 4x4 token (what `moe_loss` needs of a model)."""

    patch = 4

    def __init__(self, outs, logits):
        self.outs = outs
        self.logits = nnx.Param(logits)

    def forward_all(self, x_t, cond, ab):
        g = jnp.broadcast_to(jax.nn.softmax(self.logits[...]), (1, 2, 2, 3))
        return msr.aggregate(self.outs, msr.gate_to_pixels(g, 4)), self.outs, g


def test_gated_objective_trains_each_expert_where_it_is_routed():
    """objective="gated": each expert's error counts where the gate routes to it. With
    expert 0 exact, routing everything to it gives zero diffusion loss, routing to the wrong
    expert a positive one; its gradient moves the gate towards the better expert. Bad
    objective / diversity names raise."""
    x0 = jax.random.normal(jax.random.key(9), (1, 8, 8))
    outs = jnp.stack([x0, x0 + 1.0, x0 - 1.0], -1)
    batch = msr.make_batch(x0 * 0.1, jnp.zeros_like(x0), residual_scale=0.1)

    Stub = functools.partial(_FixedExperts, outs)

    loss = functools.partial(
        msr.moe_loss,
        schedule=SCH,
        parameterisation="x0",
        objective="gated",
        diversity="similarity",
        num_levels=1,
    )

    @jax.jit  # one compile for the three gate settings below
    def metrics_and_grad(logits):
        f = lambda lg: loss(Stub(lg), batch, jax.random.key(0))  # noqa: E731
        return jax.grad(f, has_aux=True)(logits)

    _, good = metrics_and_grad(jnp.array([20.0, 0.0, 0.0]))
    _, bad = metrics_and_grad(jnp.array([0.0, 20.0, 0.0]))
    assert float(good["gated"]) < 1e-6 and float(bad["gated"]) > 0.9
    assert "similarity" in good and "balance" not in good
    g = np.asarray(metrics_and_grad(jnp.zeros(3))[0])
    assert g[0] < g[1] and g[0] < g[2]  # descending the loss raises expert 0's logit
    with pytest.raises(ValueError, match="objective"):
        loss(Stub(jnp.zeros(3)), batch, jax.random.key(0), objective="sum")
    with pytest.raises(ValueError, match="diversity"):
        loss(Stub(jnp.zeros(3)), batch, jax.random.key(0), diversity="entropy")


def test_detached_gate_and_region_routing():
    """`detach_gate=True`: the gated expert losses no longer move the gate (with no gate
    target term its gradient is exactly 0). `region_routing=1`: pixels inside region i are
    scored by expert i alone whatever the gate says; outside every region the gate routes."""
    x0 = jax.random.normal(jax.random.key(9), (1, 8, 8))
    outs = jnp.stack([x0, x0 + 1.0, x0 - 1.0], -1)

    Stub = functools.partial(_FixedExperts, outs)

    regions = jnp.zeros((1, 8, 8, 3)).at[:, :4, :, 0].set(1.0)  # top half: expert 0's region
    batch = msr.make_batch(x0 * 0.1, jnp.zeros_like(x0), residual_scale=0.1, regions=regions)
    loss = functools.partial(
        msr.moe_loss,
        schedule=SCH,
        parameterisation="x0",
        objective="gated",
        gate_weight=0.0,
        diversity="similarity",  # "balance" would act on the gate directly
        num_levels=1,
    )

    @functools.partial(jax.jit, static_argnames=("detach_gate", "region_routing"))
    def grad_and_metrics(logits, detach_gate=False, region_routing=0.0):
        def f(lg):
            kw = {"detach_gate": detach_gate, "region_routing": region_routing}
            return loss(Stub(lg), batch, jax.random.key(0), **kw)

        return jax.grad(f, has_aux=True)(logits)

    logits = jnp.array([0.0, 1.0, -1.0])
    assert np.abs(np.asarray(grad_and_metrics(logits)[0])).max() > 1e-3
    np.testing.assert_array_equal(np.asarray(grad_and_metrics(logits, detach_gate=True)[0]), 0.0)
    to_1 = jnp.array([0.0, 20.0, 0.0])  # the gate routes everything to expert 1
    wrong = Stub(to_1)
    free = grad_and_metrics(to_1)[1]
    routed = grad_and_metrics(to_1, region_routing=1.0)[1]
    # expert 1 is off by 1 everywhere; routed, only the bottom half (no region) still counts
    np.testing.assert_allclose(float(free["gated"]), 1.0, atol=1e-4)
    np.testing.assert_allclose(float(routed["gated"]), 0.5, atol=1e-4)
    with pytest.raises(ValueError, match="region_routing"):
        loss(wrong, batch, jax.random.key(0), region_routing=1.5)
    with pytest.raises(ValueError, match="batch.regions"):
        loss(wrong, msr.make_batch(x0, jnp.zeros_like(x0)), jax.random.key(0), region_routing=1.0)


@given(strength=st.floats(0.05, 0.4), gain=st.floats(0.5, 2.0))
def test_local_normalise_cancels_a_smooth_multiplicative_field(strength, gain):
    """A smooth field times a gain changes the locally normalised image far less than the
    raw one (the gate's bias-robust input); the window must be positive."""
    y = 0.2 + jax.random.uniform(jax.random.key(10), (1, 16, 16, 1))
    ramp = jnp.linspace(-1.0, 1.0, 16)
    field = gain * jnp.exp(strength * (ramp[:, None] + ramp[None, :]))[None, ..., None]
    raw = float(jnp.abs(field * y - y).mean() / jnp.abs(y).mean())
    normed = msr.local_normalise(y, 5)
    moved = msr.local_normalise(field * y, 5) - normed
    assert float(jnp.abs(moved).mean() / jnp.abs(normed).mean()) < 0.5 * raw
    # the running-sum box mean equals Flax's average pool that skips the padding
    ref = nnx.avg_pool(y, (5, 5), strides=(1, 1), padding="SAME", count_include_pad=False)
    assert_trees_close(normed, y / (ref + 0.05), rtol=1e-5)
    with pytest.raises(ValueError, match="window"):
        msr.local_normalise(y, 0)
    with pytest.raises(ValueError, match="local_norm"):
        msr.FeatureExtractor(1, 8, local_norm=-1, rngs=nnx.Rngs(0))
