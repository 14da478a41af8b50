import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from hypothesis import given
from hypothesis import strategies as st

import safe_rl_jax as srl
from testkit import assert_trees_close

CAP, N = 6, 5
# One small EPO program, compiled once and shared by the iteration, resume and sharding tests.
SPRAY = srl.SprayField(episode_length=8)
EPO_PPO = srl.PPOConfig(num_envs=8, num_epochs=1, num_minibatches=2, hidden=(8,))
EPO_CFG = srl.EPOConfig(
    capacity=4, grid_points=8, num_starts=3, ascent_steps=2, inner_iterations=1, check_episodes=4
)
EPO_INIT, EPO_ITERATION, _ = srl.make_epo(SPRAY, srl.lagrangian(0.5), EPO_PPO, EPO_CFG)
EPO_STEP = jax.jit(EPO_ITERATION)


def _epo_state(seed):
    """A fresh EPO state committed to one device, as restored checkpoints and `EPO_STEP`'s
    outputs are: jit keys its cache on committedness, so all these calls share one compile."""
    return jax.device_put(EPO_INIT(jax.random.key(seed), srl.EPO), jax.devices()[0])


_add = jax.jit(lambda ws, c, v: srl.add_violated(ws, c, v, eta=0.1, min_distance=0.01))


@given(
    viol=st.lists(st.floats(-1.0, 1.0), min_size=N, max_size=N),
    pos=st.lists(st.floats(0.0, 1.0), min_size=N, max_size=N),
    pre=st.integers(0, CAP),
)
def test_add_violated_invariants(viol, pos, pre):
    ws = srl.empty_working_set(CAP, 1)
    ws = srl.WorkingSet(
        ws.index.at[:pre, 0].set(jnp.linspace(2.0, 3.0, pre)), ws.mask.at[:pre].set(True)
    )
    cand, v = jnp.array(pos)[:, None], jnp.array(viol)
    new, added = _add(ws, cand, v)
    added, v = np.asarray(added), np.asarray(v)
    assert np.all(v[added] > 0.1)  # only violated candidates enter
    assert int(new.mask.sum()) == pre + int(added.sum()) <= CAP  # capacity respected
    np.testing.assert_array_equal(np.asarray(new.index[:pre]), np.asarray(ws.index[:pre]))  # kept
    for y in np.asarray(cand)[added]:
        assert np.any(np.all(np.isclose(np.asarray(new.index)[np.asarray(new.mask)], y), axis=-1))
    if pre == 0 and np.any(v > 0.1):  # an empty set always takes the worst violated candidate
        assert added[int(np.argmax(v))]


def test_drop_inactive_frees_zero_multiplier_slots():
    ws = srl.WorkingSet(jnp.zeros((3, 1)), jnp.array([True, True, False]))
    out = srl.drop_inactive(ws, jnp.array([0.0, 0.3, 0.7]))
    np.testing.assert_array_equal(np.asarray(out.mask), [False, True, False])


def test_box_grid_and_errors():
    b = srl.box([0.0, -1.0], [1.0, 1.0])
    g = b.grid(3)
    assert g.shape == (9, 2) and float(g.min()) == -1.0 and float(g.max()) == 1.0
    with pytest.raises(ValueError, match="high"):
        srl.box([1.0], [0.0])
    with pytest.raises(ValueError, match="low/high"):
        srl.box([0.0, 0.0], [1.0])


def test_worst_violation_search_beats_the_grid():
    b = srl.box([0.0], [1.0])
    v = lambda y: -((y[0] - 0.37) ** 2)
    ys, vals = jax.jit(
        lambda: srl.worst_violations(v, b, grid_points=5, num_starts=2, steps=50, step_size=0.005)
    )()
    assert abs(float(ys[0, 0]) - 0.37) < 0.01
    assert float(vals[0]) >= float(jnp.max(jax.vmap(v)(b.grid(5))))
    assert float(vals[0]) >= float(vals[1])


def test_spray_violation_map_matches_numpy_reference():
    env = srl.SprayField(episode_length=6)
    T, E = 6, 2
    xs = np.linspace(0.1, 0.6, T * E).reshape(T, E).astype(np.float32)
    rate_a = np.linspace(-1, 1, T * E).reshape(T, E).astype(np.float32)
    states = srl.EnvState(
        (jnp.array(xs), jnp.zeros((T, E), jnp.int32)),
        jnp.zeros((T, E, 2)),
        jnp.zeros((T, E)),
        jnp.zeros((T, E, 1)),
        jnp.zeros((T, E), bool),
    )
    actions = jnp.array(rate_a)[..., None]
    traj = srl.Trajectories(states, actions, jnp.ones((T, E)))
    ys = np.array([[0.0], [0.3], [0.7]], np.float32)
    got = np.asarray(jax.jit(lambda t, y: srl.violation_map(env, t, y))(traj, jnp.array(ys)))
    rate = (rate_a + 1) / 2
    for j, y in enumerate(ys[:, 0]):
        demand = env.base_demand + 0.8 * np.exp(-((y - env.hot_spot) ** 2) / (2 * env.hot_width**2))
        deposit = (rate * env.gain * np.exp(-((xs - y) ** 2) / (2 * env.width**2))).sum(0)
        np.testing.assert_allclose(got[j], demand - deposit.mean(), rtol=1e-4, atol=1e-5)


def test_epo_iteration_fills_working_set_within_capacity():
    state = _epo_state(0)
    assert int(state.train.mask.sum()) == 0
    state, m = EPO_STEP(state)
    assert 1 <= int(m["working_set_size"]) <= 4  # the initial policy under-sprays somewhere
    assert float(m["max_violation_found"]) > EPO_CFG.eta
    assert bool(jnp.all(state.train.lam[~state.train.mask] == 0))
    with pytest.raises(ValueError, match="num_starts"):
        srl.make_epo(SPRAY, srl.lagrangian(), EPO_PPO, EPO_CFG._replace(num_starts=100))


def test_epo_checkpoint_resume_equals_uninterrupted(tmp_path):
    """Save after one outer iteration, restore into an abstract state: the next iteration
    (search, exchange, PPO updates, drop) equals the uninterrupted run's, key included."""
    half, _ = EPO_STEP(_epo_state(4))
    straight, m_straight = EPO_STEP(half)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(1, args=ocp.args.StandardSave(half))
        mngr.wait_until_finished()
        restored = mngr.restore(1, args=ocp.args.StandardRestore(jax.eval_shape(lambda: half)))
    resumed, m_resumed = EPO_STEP(restored)
    assert int(half.train.mask.sum()) >= 1  # the resumed iteration starts from a non-empty set
    assert_trees_close(resumed, straight)
    assert_trees_close(m_resumed, m_straight)


def test_epo_sharded_envs_equal_single_device():
    with pytest.raises(ValueError, match="mesh"):
        srl.make_epo(SPRAY, srl.lagrangian(), EPO_PPO, EPO_CFG, mesh=jax.make_mesh((8,), ("e",)))
    mesh = jax.make_mesh((8,), ("envs",), axis_types=(jax.sharding.AxisType.Auto,))
    _, sharded, _ = srl.make_epo(SPRAY, srl.lagrangian(0.5), EPO_PPO, EPO_CFG, mesh=mesh)
    st = EPO_INIT(jax.random.key(5), srl.EPO)  # uncommitted: the mesh program places it
    a, ma = EPO_STEP(jax.device_put(st, jax.devices()[0]))
    lowered = jax.jit(sharded).lower(st)
    assert '[{"envs"}' in lowered.as_text()  # the env axis is really constrained to the mesh
    b, mb = lowered.compile()(st)
    assert int(ma["working_set_size"]) >= 1  # trained against a non-empty working set
    assert_trees_close(ma, mb, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(a.train.mask), np.asarray(b.train.mask))
    assert_trees_close(a.train.lam, b.train.lam, rtol=1e-4, atol=1e-5)
    assert_trees_close(a.train.params, b.train.params, rtol=1e-3, atol=1e-5)


def test_separated_starts_find_both_peaks():
    b = srl.box([0.0], [1.0])
    v = lambda y: jnp.maximum(-((y[0] - 0.2) ** 2), 0.9 * -((y[0] - 0.8) ** 2) - 1e-3)
    ys, _ = jax.jit(
        lambda: srl.worst_violations(
            v, b, grid_points=21, num_starts=2, steps=0, step_size=0.0, separation=0.3
        )
    )()
    np.testing.assert_allclose(np.sort(np.asarray(ys[:, 0], np.float64)), [0.2, 0.8], atol=1e-3)


def test_fixed_grid_is_regular_and_padded():
    g, m = srl.fixed_grid(srl.box([0.0, -1.0], [1.0, 1.0]), 10)
    assert g.shape == (10, 2) and int(m.sum()) == 9  # 3 x 3 grid, one masked pad slot
    np.testing.assert_allclose(np.unique(np.asarray(g[:9, 1])), [-1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="capacity"):
        srl.fixed_grid(srl.box([0.0, 0.0], [1.0, 1.0]), 3)


@given(cost=st.floats(-3.0, 3.0), limit=st.floats(0.0, 2.0))
def test_penalty_multiplier_is_proportional_to_violation(cost, limit):
    ctrl = srl.penalty(4.0)
    lam, _ = ctrl.update(ctrl.init(2), srl.constraint_signal([cost, cost], limit, [True, False]))
    np.testing.assert_allclose(float(lam[0]), 4.0 * max(0.0, cost - limit), rtol=1e-5, atol=1e-5)
    assert float(lam[1]) == 0.0  # masked slot
    with pytest.raises(ValueError, match="coefficient"):
        srl.penalty(0.0)


def test_robust_cart_closed_form_matches_simulation_under_other_dynamics():
    """position_under(state, (m, w)) == simulating the same forces with mass m and push w."""
    env = srl.RobustCart()
    forces = np.linspace(1.0, -0.6, env.episode_length).astype(np.float32)
    state = env.reset(jax.random.key(3))
    x0 = float(state.physics[0])
    for m, w in [(0.8, 0.03), (1.5, -0.03), (1.0, 0.0)]:
        x, v, s = x0, 0.0, state
        for t, f in enumerate(forces):
            pred = float(env.position_under(s, jnp.array([m, w])))
            np.testing.assert_allclose(pred, x, rtol=1e-4, atol=1e-5, err_msg=f"m={m} w={w} t={t}")
            v = v + env.dt * (f + w) / m
            x = x + env.dt * v
            s = env.step(s, jnp.array([f]))


def test_ship_pollution_map_matches_numpy_reference():
    env = srl.ShipRoute(episode_length=5)
    T, E = 5, 2
    pos = np.random.default_rng(0).uniform(0, 1, (T, E, 2)).astype(np.float32)
    act = np.random.default_rng(1).uniform(-1, 1, (T, E, 2)).astype(np.float32)
    states = srl.EnvState(
        (jnp.array(pos), jnp.zeros((T, E, 2))),
        jnp.zeros((T, E, 6)),
        jnp.zeros((T, E)),
        jnp.zeros((T, E, 1)),
        jnp.zeros((T, E), bool),
    )
    valid = np.ones((T, E), np.float32)
    valid[3:, 1] = 0.0  # the second episode ended (arrived) after 3 steps
    traj = srl.Trajectories(states, jnp.array(act), jnp.array(valid))
    ys = np.array([[0.45, 0.52], [0.2, 0.7], [0.9, 0.5]], np.float32)
    got = np.asarray(jax.jit(lambda t, y: srl.violation_map(env, t, y))(traj, jnp.array(ys)))
    sites = np.array(env.sites)
    for j, y in enumerate(ys):
        e = env.idle_emission + env.load_emission * (act**2).sum(-1) / 2
        plume = np.exp(-((pos - y) ** 2).sum(-1) / (2 * env.plume**2))
        pollution = (e * env.gain * plume * valid).sum(0).mean()
        near = np.exp(-((y - sites) ** 2).sum(-1) / (2 * env.site_radius**2)).max()
        cap = env.cap - (env.cap - env.protected_cap) * near
        np.testing.assert_allclose(got[j], pollution - cap, rtol=1e-4, atol=1e-5)
