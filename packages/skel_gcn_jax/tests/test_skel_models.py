"""Model variants: shapes (traced, not compiled), CTR-GCN forward, size, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import skel_gcn_jax as sg

SPLAT = sg.SplatConfig(grid=4)
X = 0.3 * jax.random.normal(jax.random.key(0), (2, 3, 4, 25, 2))


def _model(cfg):
    return sg.GCNClassifier(cfg, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "make",
    [
        lambda: _model(sg.kgs_gcn_config(5, (8, 16), splat=SPLAT)),
        lambda: _model(
            sg.kgs_gcn_config(5, (8, 16), splat=SPLAT, fusion="concat", topology="learned")
        ),
        lambda: _model(sg.st_gcn_config(5, (8, 16))),
        lambda: _model(sg.ctr_gcn_config(5, (8, 16))),
        lambda: sg.HeatmapCNN(5, width=4, splat=SPLAT._replace(isotropic=True), rngs=nnx.Rngs(0)),
    ],
    ids=["kgs", "kgs_concat_learned", "st_gcn", "ctr_gcn", "heatmap_cnn"],
)
def test_model_variants_map_skeletons_to_logits(make):
    out = nnx.eval_shape(lambda: make()(X))
    assert out.shape == (2, 5) and out.dtype == jnp.float32


def test_ctr_gcn_runs_and_its_refinement_is_sample_dependent():
    model = _model(sg.ctr_gcn_config(5, (8,)))
    model.blocks[0].gcn.alpha[...] = jnp.ones(())
    graphdef, params = nnx.split(model)
    out = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))(params, X)
    assert out.shape == (2, 5) and np.isfinite(np.asarray(out)).all()


def test_kgs_gcn_is_about_the_papers_size_at_full_width():
    cfg = sg.kgs_gcn_config(60, (64, 64, 64, 128, 128, 128, 192, 192, 192))
    model = nnx.eval_shape(lambda: _model(cfg))
    assert 1.0e6 < sg.count_params(model) < 1.8e6


def test_widened_st_gcn_matches_the_kgs_gcn_parameter_count():
    target = sg.config_params(sg.kgs_gcn_config(12, (16, 32)))
    wide = sg.widen_to_params(sg.st_gcn_config(12, (16, 32)), target)
    assert wide.topology == "physical" and wide.fusion == "none"
    assert wide.channels[0] > 16 and wide.channels[1] > 32
    assert abs(sg.config_params(wide) - target) / target < 0.03
    with pytest.raises(ValueError, match="target"):
        sg.widen_to_params(sg.st_gcn_config(12, (16, 32)), 10)


def test_bad_model_inputs_are_named():
    with pytest.raises(ValueError, match="x"):
        sg.check_skeletons(jnp.zeros((2, 2, 6, 25, 2)))
    with pytest.raises(TypeError, match="x"):
        sg.check_skeletons(jnp.zeros((2, 3, 6, 25, 2), jnp.int32))
    with pytest.raises(ValueError, match="NaN"):
        sg.check_skeletons(X.at[0, 0, 0, 0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="x"):
        sg.check_skeletons(jnp.zeros((0, 3, 6, 25, 2)))
    with pytest.raises(ValueError, match="config.topology"):
        _model(sg.kgs_gcn_config(5, (8,), topology="telepathy"))
    with pytest.raises(ValueError, match="config.fusion"):
        _model(sg.kgs_gcn_config(5, (8,), fusion="sum"))
    with pytest.raises(ValueError, match="config.block"):
        _model(sg.kgs_gcn_config(5, (8,), block="mlp"))


def test_heatmap_cnn_trains_under_jit_and_every_parameter_gets_a_gradient():
    import optax

    splat = SPLAT._replace(isotropic=True)
    model = sg.HeatmapCNN(3, width=4, splat=splat, rngs=nnx.Rngs(0))
    hm = sg.render_skeleton_heatmaps(X, splat)
    assert hm.shape == (2, 4, 3, 5, 4, 4)
    trainer = sg.make_trainer(model, optax.adam(3e-2))
    state = trainer.init(model)
    y = jnp.array([0, 2])
    # precomputed heatmaps == heatmaps rendered inside the jitted forward
    np.testing.assert_allclose(
        trainer.predict(state.params, X, hm), trainer.predict(state.params, X), rtol=1e-5
    )
    new, m0 = trainer.update(state, X, y, hm)
    # Adam moves a parameter iff its gradient is non-zero (first step: update = -lr sign(g))
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new.params, state.params)
    assert all(jax.tree.leaves(moved))
    for _ in range(12):
        new, m = trainer.update(new, X, y, hm)
    assert float(m["loss"]) < 0.5 * float(m0["loss"])


def test_heatmap_cnn_bad_inputs_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        sg.HeatmapCNN(1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="width"):
        sg.HeatmapCNN(5, width=0, rngs=nnx.Rngs(0))
    model = sg.HeatmapCNN(5, width=4, splat=SPLAT, rngs=nnx.Rngs(0))
    wrong_groups = jnp.zeros((2, 4, 3, 4, 4, 4))
    with pytest.raises(ValueError, match="heatmaps"):
        nnx.eval_shape(lambda: model(X, wrong_groups))
    with pytest.raises(ValueError, match="heatmaps"):
        nnx.eval_shape(lambda: model(X, jnp.zeros((3, 4, 3, 5, 4, 4))))


def test_adjacency_arms_are_distinct_and_the_default_is_prior_plus_offset():
    kgs = sg.kgs_gcn_config(12, (8, 16), splat=SPLAT)
    arms = {
        "physical": kgs._replace(topology="physical"),
        "learned": kgs._replace(topology="learned"),
        "prior_only": kgs._replace(learn_offset=False),
        "prior_offset": kgs,
    }
    models = {k: nnx.eval_shape(lambda c=c: _model(c)) for k, c in arms.items()}
    # (learned offset, Bhattacharyya prior) per arm, in the order above
    parts = [
        (m.blocks[0].gcn.offset is not None, m.prior_weight is not None) for m in models.values()
    ]
    assert parts == [(False, False), (True, False), (False, True), (True, True)]
    assert sg.config_params(kgs._replace(learn_offset=True)) == sg.config_params(kgs)
    with pytest.raises(ValueError, match="learn_offset"):
        _model(kgs._replace(topology="physical", learn_offset=True))
    with pytest.raises(ValueError, match="learn_offset"):
        _model(kgs._replace(topology="learned", learn_offset=False))


def test_st_gcn_has_one_9x1_temporal_conv_and_kgs_keeps_the_multiscale_block():
    st = nnx.eval_shape(lambda: _model(sg.st_gcn_config(5, (8, 16))))
    assert isinstance(st.blocks[1].tcn, nnx.Conv) and st.blocks[1].tcn.kernel.shape == (
        9,
        1,
        16,
        16,
    )
    kgs = nnx.eval_shape(lambda: _model(sg.kgs_gcn_config(5, (8, 16), splat=SPLAT)))
    assert not isinstance(kgs.blocks[1].tcn, nnx.Conv)
    with pytest.raises(ValueError, match="config.temporal"):
        _model(sg.st_gcn_config(5, (8,), temporal="lstm"))


def test_ctr_gcn_can_be_matched_to_the_kgs_gcn_parameter_count():
    target = sg.config_params(sg.kgs_gcn_config(12, (16, 32)))
    ctr = sg.widen_to_params(sg.ctr_gcn_config(12, (16, 32)), target)
    assert ctr.block == "ctr" and abs(sg.config_params(ctr) - target) / target < 0.03
