"""KGS-GCN trained through the pure trainer: identity-at-init gate, person symmetry, per-sample
topology, every parameter learns, it fits, sharded == single device, checkpoint round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

import skel_gcn_jax as sg
from testkit import assert_trees_close

CFG = sg.kgs_gcn_config(3, (8,), splat=sg.SplatConfig(grid=4))
X = 0.3 * jax.random.normal(jax.random.key(0), (8, 3, 4, 25, 2))
Y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
HM = sg.render_skeleton_heatmaps(X, CFG.splat)


def _trainer(mesh=None):
    model = sg.GCNClassifier(CFG, rngs=nnx.Rngs(0))
    trainer = sg.make_trainer(model, optax.adam(1e-2), mesh=mesh)
    return model, trainer, trainer.init(model)


@pytest.fixture(scope="module")
def single():
    return _trainer()


def test_update_keeps_the_state_types_so_the_step_compiles_once(single):
    # a weakly typed initial parameter would change type after one step and retrigger
    # compilation of the whole train step on the next call
    _, trainer, state = single
    new, _ = trainer.update(state, X, Y, HM)
    assert jax.tree.map(jax.typeof, new) == jax.tree.map(jax.typeof, state)


def test_visual_gate_is_identity_at_init_and_active_after_perturbation(single):
    _, trainer, state = single
    assert HM.shape == (8, 4, 3, 5, 4, 4)
    assert_trees_close(
        trainer.predict(state.params, X, HM),
        trainer.predict(state.params, X, 0 * HM),
        rtol=1e-5,
        atol=1e-6,
    )
    perturbed = jax.tree_util.tree_map_with_path(
        lambda path, p: p + 0.5 if "gates" in jax.tree_util.keystr(path) else p, state.params
    )
    assert not np.allclose(
        trainer.predict(perturbed, X, HM), trainer.predict(perturbed, X, 0 * HM), atol=1e-4
    )


@given(st.floats(0.1, 2.0))
def test_logits_are_symmetric_in_the_persons(single, scale):
    _, trainer, state = single
    x = X * jnp.float32(scale)
    assert_trees_close(
        trainer.predict(state.params, x, HM),
        trainer.predict(state.params, x[..., ::-1], HM),
        rtol=1e-4,
        atol=1e-5,
    )


def test_bhattacharyya_topology_is_per_sample(single):
    model = single[0]
    adj = jax.jit(model.adjacency)(X[:2])
    assert adj.shape == (4, 3, 25, 25)
    assert not np.allclose(adj[0], adj[2])
    extra = adj - sg.spatial_partitions()[None]  # prior_weight (0.5 at init) x row-normalised prior
    np.testing.assert_allclose(extra.sum(-1), 0.5, rtol=1e-4)


def test_training_fits_and_every_parameter_learns(single):
    _, trainer, state = single
    start = state
    first = None
    for _ in range(12):
        state, m = trainer.update(state, X, Y, HM)
        first = float(m["loss"]) if first is None else first
    assert float(m["loss"]) < 0.5 * first
    assert int(state.step) == 12
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), start.params, state.params)
    assert all(jax.tree.leaves(changed))  # gates open, so even the visual encoder gets gradient


def test_sharded_update_equals_single_device(single):
    _, trainer, state = single
    mesh = sg.data_mesh(8)
    _, strainer, sstate = _trainer(mesh)
    state, m = trainer.update(state, X, Y, HM)
    sstate, sm = strainer.update(sstate, X, Y, HM)
    assert_trees_close(sstate.params, state.params, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(sm["loss"], m["loss"], rtol=1e-4)
    sharded_logits = strainer.predict(sstate.params, X, HM)
    assert len(sharded_logits.sharding.device_set) == 8
    assert_trees_close(sharded_logits, trainer.predict(state.params, X, HM), rtol=1e-4, atol=1e-5)


def test_checkpoint_restore_continues_identically(single, tmp_path):
    _, trainer, state = single
    state, _ = trainer.update(state, X, Y, HM)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp_path / "ckpt", state)
        ckpt.wait_until_finished()
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        restored = ckpt.restore(tmp_path / "ckpt", target)
    a, ma = trainer.update(state, X, Y, HM)
    b, mb = trainer.update(restored, X, Y, HM)
    assert_trees_close(b, a)
    np.testing.assert_array_equal(ma["loss"], mb["loss"])


def test_evaluate_handles_partial_batches(single):
    _, trainer, state = single
    res = sg.evaluate(
        trainer,
        state.params,
        np.asarray(X[:6]),
        np.asarray(Y[:6]),
        batch_size=4,
        heatmaps=np.asarray(HM[:6]),
    )
    logits = jnp.concatenate(
        [
            trainer.predict(state.params, X[:4], HM[:4]),
            trainer.predict(state.params, X[4:], HM[4:])[:2],
        ]
    )
    np.testing.assert_allclose(res["top1"], sg.topk_accuracy(logits, Y[:6], 1))
    assert res["top5"] == 1.0


def test_topk_accuracy_matches_numpy():
    logits = jax.random.normal(jax.random.key(1), (16, 7))
    labels = jax.random.randint(jax.random.key(2), (16,), 0, 7)
    order = np.argsort(-np.asarray(logits), axis=-1)
    for k in (1, 3, 7):
        expect = np.mean([labels[i] in order[i, :k] for i in range(16)])
        np.testing.assert_allclose(sg.topk_accuracy(logits, labels, k), expect)
    with pytest.raises(ValueError, match="k"):
        sg.topk_accuracy(logits, labels, 8)


def test_stream_fusion_weights():
    a = jnp.array([[5.0, 0.0]])
    b = jnp.array([[0.0, 5.0]])
    fused = sg.fuse_stream_logits({"joint": a, "joint_motion": b})
    assert int(jnp.argmax(fused)) == 0  # joint (weight 2) outvotes joint motion (weight 1)
    with pytest.raises(ValueError, match="weights"):
        sg.fuse_stream_logits({"depth": a})


def test_fused_stream_accuracy_averages_scores_of_separate_models():
    y = jnp.array([0, 1, 2, 0])
    right = 4.0 * jax.nn.one_hot(y, 3)
    wrong = 4.0 * jax.nn.one_hot((y + 1) % 3, 3)
    # joint + bone (weight 2 each) right, joint motion (weight 1) wrong: the ensemble is right
    acc = sg.fused_stream_accuracy(
        {"joint": right, "bone": right, "joint_motion": wrong}, y, ks=(1, 2)
    )
    assert acc == {"top1": 1.0, "top2": 1.0}
    # one stream alone that is wrong cannot outvote two right ones of equal weight
    acc = sg.fused_stream_accuracy({"joint": wrong, "bone": right}, y, {"joint": 1, "bone": 1.5})
    assert acc["top1"] == 1.0
    with pytest.raises(ValueError, match="logits"):
        sg.fused_stream_accuracy({"joint": right, "bone": right[:2]}, y)
    with pytest.raises(ValueError, match="labels"):
        sg.fused_stream_accuracy({"joint": right}, y[:3])


def test_predict_logits_is_batch_size_invariant(single):
    _, trainer, state = single
    # batch sizes 8 and 4 reuse the shapes compiled by the other tests of this module
    full = sg.predict_logits(
        trainer, state.params, np.asarray(X), batch_size=8, heatmaps=np.asarray(HM)
    )
    parts = sg.predict_logits(
        trainer, state.params, np.asarray(X[:7]), batch_size=4, heatmaps=np.asarray(HM[:7])
    )
    np.testing.assert_allclose(full[:7], parts, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="heatmaps"):
        sg.predict_logits(trainer, state.params, np.asarray(X), heatmaps=np.asarray(HM[:3]))
    with pytest.raises(ValueError, match="x"):
        sg.predict_logits(trainer, state.params, np.asarray(X[:0]))
