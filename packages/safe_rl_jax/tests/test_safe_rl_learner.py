import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import safe_rl_jax as srl
from testkit import assert_trees_close

ENV = srl.PointGoalHazards(episode_length=8)
CFG = srl.PPOConfig(num_envs=8, num_epochs=1, num_minibatches=2, hidden=(8,), learning_rate=1e-2)
TRAINER = srl.make_trainer(ENV, srl.pid_lagrangian(kp=1.0, ki=0.5), CFG)
RUN1 = jax.jit(lambda s: TRAINER.run(s, 1))


def test_run_is_compiled_and_updates_params_and_multiplier():
    st = TRAINER.init(jax.random.key(0), 0.0)
    out, m = RUN1(RUN1(st)[0])
    assert m["episode_cost"].shape == (1, 1) and m["lam"].shape == (1, 1)
    assert int(out.iteration) == 2
    diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), out.params, st.params)
    assert max(jax.tree.leaves(diff)) > 0
    assert bool(jnp.all(jnp.isfinite(m["episode_return"])))


def test_vmap_over_seeds_and_limits_equals_separate_runs():
    keys = jax.random.split(jax.random.key(1), 2)
    limits = jnp.array([0.0, 5.0])
    states = jax.vmap(TRAINER.init)(keys, limits)
    batched, mb = jax.jit(jax.vmap(lambda s: TRAINER.run(s, 2)))(states)
    for i in range(2):  # two single iterations == one scan of two (the state carries the key)
        first, m1 = RUN1(TRAINER.init(keys[i], limits[i]))
        single, m2 = RUN1(first)
        ms = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), m1, m2)
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], mb), ms, rtol=1e-4, atol=1e-5)
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], batched), single, rtol=1e-4, atol=1e-5)


def test_checkpoint_resume_equals_uninterrupted(tmp_path):
    st = TRAINER.init(jax.random.key(2), 1.0)
    half, _ = RUN1(st)
    straight, _ = RUN1(half)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(1, args=ocp.args.StandardSave(half))
        mngr.wait_until_finished()
        restored = mngr.restore(1, args=ocp.args.StandardRestore(jax.eval_shape(lambda: half)))
    resumed, _ = RUN1(restored)
    assert_trees_close(resumed, straight)


def test_sharded_envs_equal_single_device():
    with pytest.raises(ValueError, match="mesh"):
        srl.make_trainer(ENV, srl.lagrangian(), CFG, mesh=jax.make_mesh((8,), ("envs",)))
    auto = (jax.sharding.AxisType.Auto,)
    mesh = jax.make_mesh((8,), ("envs",), axis_types=auto)
    sharded = srl.make_trainer(ENV, srl.pid_lagrangian(kp=1.0, ki=0.5), CFG, mesh=mesh)
    st = TRAINER.init(jax.random.key(3), 0.0)
    a, ma = RUN1(st)
    b, mb = jax.jit(lambda s: sharded.run(s, 1))(st)
    assert_trees_close(ma, mb, rtol=1e-4, atol=1e-5)
    assert_trees_close(a.params, b.params, rtol=1e-3, atol=1e-5)


def test_evaluate_policy_and_metrics():
    st = TRAINER.init(jax.random.key(5), 0.0)
    ret, cost = jax.jit(
        lambda p, k: srl.evaluate_policy(ENV, TRAINER.graphdef, p, st.index, key=k, num_episodes=4)
    )(st.params, jax.random.key(0))
    assert cost.shape == (1,) and bool(jnp.isfinite(ret))
    s = srl.constraint_curve_stats(jnp.array([5.0, 3.0, 1.0, 2.0]), jnp.float32(1.5))
    np.testing.assert_allclose(float(s["overshoot"]), 0.5)
    np.testing.assert_allclose(float(s["oscillation"]), 1.0)
    np.testing.assert_allclose(float(s["cumulative_cost"]), 11.0)
    np.testing.assert_allclose(
        float(srl.feasible_region(jnp.array([1.0, 2.0]), jnp.array([1.5, 1.5]))), 0.5
    )


def test_bad_learner_arguments_raise():
    with pytest.raises(ValueError, match="num_minibatches"):
        srl.make_trainer(ENV, srl.lagrangian(), CFG._replace(num_minibatches=3))
    with pytest.raises(ValueError, match="gae_lambda"):
        srl.make_trainer(ENV, srl.lagrangian(), CFG._replace(gae_lambda=1.5))
    with pytest.raises(TypeError, match="controller"):
        srl.make_trainer(ENV, object(), CFG)
    with pytest.raises(ValueError, match="num_costs"):
        srl.make_trainer(ENV, srl.lagrangian(), CFG, num_costs=2)
    with pytest.raises(ValueError, match="products_every"):
        srl.make_trainer(ENV, srl.plo(), CFG._replace(products_every=0))
    with pytest.raises(ValueError, match="costs"):
        srl.constraint_curve_stats(jnp.array([1.0]), jnp.float32(1.0))


def test_shared_critic_values_split_the_heads():
    agent = srl.Agent(4, 2, 3, hidden=(8,), shared_critic=True, rngs=nnx.Rngs(0))
    obs = jax.random.normal(jax.random.key(0), (5, 4))
    v, vc = agent.values(obs, jnp.zeros((3, 1)))
    out = agent.value(obs)
    assert v.shape == (5,) and vc.shape == (5, 3)
    np.testing.assert_array_equal(v, out[:, 0])
    np.testing.assert_array_equal(vc, out[:, 1:])
    # The index-conditioned cost critic (first layer split into obs and index parts) equals
    # its MLP on concat(obs, y) for every slot.
    gd, params = nnx.split(srl.Agent(4, 2, 3, index_dim=2, hidden=(8, 8), rngs=nnx.Rngs(1)))
    ys = jax.random.uniform(jax.random.key(2), (3, 2))

    @jax.jit
    def both(params, obs, ys):
        model = nnx.merge(gd, params)
        pairs = jnp.concatenate([jnp.repeat(obs, 3, 0), jnp.tile(ys, (5, 1))], -1)
        return model.values(obs, ys)[1], model.cost_value.net(pairs)[:, 0].reshape(5, 3)

    vc, expect = both(params, obs, ys)
    np.testing.assert_allclose(vc, expect, rtol=1e-5, atol=1e-6)


def test_bad_shuffle_and_shared_critic_arguments_raise():
    with pytest.raises(ValueError, match="shuffle"):
        srl.make_trainer(ENV, srl.lagrangian(), CFG._replace(shuffle="steps"))
    with pytest.raises(ValueError, match="surrogate_batch"):
        srl.make_trainer(ENV, srl.plo(), CFG._replace(surrogate_batch="quarter"))
    few = CFG._replace(num_envs=2, num_minibatches=4, shuffle="transitions")
    with pytest.raises(ValueError, match="surrogate_batch"):
        srl.make_trainer(ENV, srl.plo(), few._replace(surrogate_batch="minibatch"))
    with pytest.raises(ValueError, match="surrogate_batch"):
        srl.make_trainer(ENV, srl.plo(), few._replace(surrogate_batch="minibatch_same"))
    odd = CFG._replace(num_envs=6, num_minibatches=2, shuffle="transitions")  # 3 envs: no halves
    with pytest.raises(ValueError, match="surrogate_batch"):
        srl.make_trainer(ENV, srl.plo(), odd._replace(surrogate_batch="minibatch"))
    with pytest.raises(ValueError, match="surrogate_batch"):  # 6 envs: 3 in the first half
        srl.make_trainer(ENV, srl.plo(), odd._replace(surrogate_batch="half"))
    with pytest.raises(ValueError, match="num_minibatches"):
        srl.make_trainer(ENV, srl.lagrangian(), CFG._replace(shuffle="envs", num_minibatches=3))
    with pytest.raises(ValueError, match="shared_critic"):
        srl.Agent(4, 2, 1, index_dim=2, shared_critic=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="cost_hidden"):
        srl.Agent(4, 2, 1, shared_critic=True, cost_hidden=(3,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="cost_hidden"):
        srl.make_trainer(ENV, srl.lagrangian(), CFG._replace(cost_hidden=(0,)))
    narrow = srl.Agent(4, 2, 1, hidden=(5, 5), cost_hidden=(3,), rngs=nnx.Rngs(0))
    assert narrow.cost_value.net.layers[0].kernel.shape == (4, 3)
    assert narrow.value.layers[1].kernel.shape == (5, 5)  # the reward critic keeps `hidden`


def _cond_branch_sizes(jaxpr):
    """[(equations per branch), ...] of every `cond` in a jaxpr, sub-jaxprs included."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "cond":
            out.append(tuple(len(b.jaxpr.eqns) for b in eqn.params["branches"]))
        for v in eqn.params.values():
            for sub in v if isinstance(v, tuple) else (v,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    out += _cond_branch_sizes(inner)
    return out


def test_default_fast_paths_match_reference_paths():
    # Fast paths (defaults): minibatches of whole per-env unrolls, the critic once after the
    # unroll (+ one fused GAE scan), PLO's gradient products by the hand-written backward pass
    # on the rollout's activations. Reference: shuffled single transitions, the critic inside
    # the unroll, one jacrev of the surrogates. With one minibatch (whose loss is invariant to
    # the row order) three PLO iterations must match: a misaligned reshape, GAE or product
    # would not. Both run with products_every=2: iteration 0 computes PLO's products,
    # iteration 1 reuses them exactly (a recompute on its new rollout would differ), iteration
    # 2 refreshes. Products from the first minibatch's environments (two minibatches): same
    # first rollout, a different signal (a strict subset of the batch).
    assert srl.PPOConfig().products_every == 1  # the default recomputes every iteration
    ctrl, outs, trainers = srl.plo(horizon=2, solver_steps=5), [], []
    ref = dict(shuffle="transitions", batched_values=False, surrogate_gradients="jacrev")
    sub = dict(num_minibatches=2, surrogate_batch="minibatch")
    every = dict(num_minibatches=1, products_every=2)
    for over in (dict(ref, **every), every, sub):
        tr = srl.make_trainer(ENV, ctrl, CFG._replace(hidden=(8, 8), **over))
        trainers.append(tr)
        st = tr.init(jax.random.key(4), 0.5)
        outs.append(jax.jit(lambda s, tr=tr: tr.run(s, 3))(st))
    assert_trees_close(outs[0], outs[1], rtol=1e-4, atol=1e-6)
    full, m = outs[1][1], outs[2][1]
    rdot = np.asarray(full["reward_dot"][:, 0])
    assert "gram" not in full and rdot.shape == (3,)
    assert rdot[1] == rdot[0] and abs(rdot[2] - rdot[1]) > 1e-6 and abs(rdot[0]) > 0
    assert float(full["lam"][0, 0]) >= 0 and bool(jnp.all(jnp.isfinite(full["lam"])))
    np.testing.assert_array_equal(m["episode_cost"][0], full["episode_cost"][0])  # same rollout
    assert abs(float(m["reward_dot"][0, 0] - full["reward_dot"][0, 0])) > 1e-6  # a subset
    for new in (outs[1][0], outs[2][0]):
        diff = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), new.params, st.params)
        assert min(jax.tree.leaves(diff)) > 0  # every parameter (both critics included) moved
    # under vmap the skip is still a branch (loop-counter predicate), not a select of both
    batched = jax.tree.map(lambda x: jnp.stack([x, x]), st)
    run3 = jax.vmap(lambda s: trainers[1].run(s, 3))
    sizes = _cond_branch_sizes(jax.make_jaxpr(run3)(batched).jaxpr)
    assert any(min(b) == 0 and max(b) > 20 for b in sizes), sizes
