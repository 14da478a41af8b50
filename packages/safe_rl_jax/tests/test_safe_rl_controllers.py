from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import safe_rl_jax as srl

K = 3
costs_seq = st.lists(st.floats(0.0, 50.0), min_size=6, max_size=6)


_JIT = {}


def _run(ctrl, costs, limit, mask=None, **signal):
    """Run a controller over a cost sequence; `ctrl` is a cached, module-level instance."""
    update = _JIT.setdefault(id(ctrl), jax.jit(ctrl.update))
    state = ctrl.init(K)
    lams = []
    for c in costs:
        sig = srl.constraint_signal(jnp.full((K,), c), limit, mask, **signal)
        lam, state = update(state, sig)
        lams.append(np.asarray(lam))
    return np.stack(lams), state


class OmniSafePID:
    """Line-by-line re-statement of OmniSafe's PIDLagrangian.pid_update (scalar)."""

    def __init__(self, kp, ki, kd, delay, alpha_p, alpha_d):
        self.kp, self.ki, self.kd, self.a_p, self.a_d = kp, ki, kd, alpha_p, alpha_d
        self.i, self.p, self.d, self.first = 0.0, 0.0, 0.0, True
        self.ds = deque([0.0] * delay, maxlen=delay)

    def update(self, cost, limit):
        delta = cost - limit
        self.i = max(0.0, self.i + delta * self.ki)
        if self.first:
            self.p, self.d, self.first = delta, cost, False
        else:
            self.p = self.a_p * self.p + (1 - self.a_p) * delta
            self.d = self.a_d * self.d + (1 - self.a_d) * cost
        pid_d = max(0.0, self.d - self.ds[0])
        self.ds.append(self.d)
        return max(0.0, self.kp * self.p + self.i + self.kd * pid_d)


@given(costs=costs_seq, limit=st.floats(0.0, 30.0))
def test_pid_matches_omnisafe_reference(costs, limit):
    lams, _ = _run(PID4, costs, limit)
    ref = OmniSafePID(0.1, 0.01, 0.01, 4, 0.95, 0.95)
    expect = [ref.update(c, limit) for c in costs]
    np.testing.assert_allclose(lams[:, 0], expect, rtol=1e-4, atol=1e-5)


@given(costs=costs_seq, limit=st.floats(0.0, 30.0))
def test_lagrangian_and_incremental_pid_closed_forms(costs, limit):
    lams, _ = _run(LAG, costs, limit)
    lam, ref = 0.0, []
    for c in costs:
        lam = max(0.0, lam + 0.05 * (c - limit))
        ref.append(lam)
    np.testing.assert_allclose(lams[:, 0], ref, rtol=1e-4, atol=1e-4)
    lams, _ = _run(INC, costs, limit)
    lam, e1, e2, ref = 0.0, 0.0, 0.0, []
    for c in costs:
        e = c - limit
        lam = max(0.0, lam + 0.2 * (e - e1) + 0.05 * e + 0.1 * (e - 2 * e1 + e2))
        e1, e2 = e, e1
        ref.append(lam)
    np.testing.assert_allclose(lams[:, 0], ref, rtol=1e-4, atol=1e-4)


PID4 = srl.pid_lagrangian(0.1, 0.01, 0.01, delay=4)
LAG = srl.lagrangian(0.05)
INC = srl.incremental_pid_lagrangian(0.2, 0.05, 0.1)
CONTROLLERS = {
    "lagrangian": srl.lagrangian(0.1),
    "pid": srl.pid_lagrangian(),
    "inc_pid": srl.incremental_pid_lagrangian(),
    "plo": srl.plo(horizon=3, solver_steps=10),
}


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
@given(costs=costs_seq, limit=st.floats(0.0, 30.0), rdot=st.floats(-1.0, 1.0))
def test_multipliers_nonnegative_and_masked_slots_zero(name, costs, limit, rdot):
    mask = jnp.array([True, False, True])
    gram = jnp.eye(K) * 2.0
    lams, state = _run(
        CONTROLLERS[name], costs, limit, mask, reward_dot=jnp.full((K,), rdot), gram=gram
    )
    assert np.all(lams >= 0) and np.all(np.isfinite(lams))
    assert np.all(lams[:, 1] == 0.0)
    fresh = CONTROLLERS[name].init(K)
    for got, init in zip(jax.tree.leaves(state), jax.tree.leaves(fresh), strict=True):
        if got.ndim >= 1 and got.shape[0] == K:
            np.testing.assert_array_equal(np.asarray(got)[1], np.asarray(init)[1])
    # Active slots with identical signals get identical multipliers.
    np.testing.assert_allclose(lams[:, 0], lams[:, 2], rtol=1e-5)


def test_plo_one_step_closed_form():
    """H=1, r=0, symmetric weights: lam = rho + (J - d + w) / a (here w = 0, first step)."""
    ctrl = srl.plo(horizon=1, q_under=1.0, r=0.0, gain_init=4.0, solver_steps=400, solver_lr=0.05)
    gram = jnp.eye(1) * 2.0
    sig = srl.constraint_signal(jnp.array([12.0]), 10.0, reward_dot=jnp.array([1.0]), gram=gram)
    lam, _ = jax.jit(ctrl.update)(ctrl.init(1), sig)
    # rho = 1/2, a = 4:  12 + 4 (0.5 - lam) / (1 + lam) = 10  =>  lam = 2
    expect = 2.0
    np.testing.assert_allclose(float(lam[0]), expect, rtol=2e-2)


PLO_MONO = srl.plo(horizon=3, solver_steps=60)


@given(excess=st.floats(0.5, 20.0))
def test_plo_multiplier_grows_with_predicted_violation(excess):
    gram, rdot = jnp.eye(1), jnp.array([0.5])
    upd = _JIT.setdefault("plo_mono", jax.jit(PLO_MONO.update))
    lo = upd(
        PLO_MONO.init(1), srl.constraint_signal(jnp.array([10.0]), 10.0, reward_dot=rdot, gram=gram)
    )[0]
    hi = upd(
        PLO_MONO.init(1),
        srl.constraint_signal(jnp.array([10.0 + excess]), 10.0, reward_dot=rdot, gram=gram),
    )[0]
    assert float(hi[0]) >= float(lo[0]) - 1e-4


def test_plo_differentiable_in_cost():
    ctrl = srl.plo(horizon=2, solver_steps=5)
    f = lambda c: ctrl.update(
        ctrl.init(1), srl.constraint_signal(c, 1.0, reward_dot=jnp.ones(1), gram=jnp.eye(1))
    )[0].sum()
    assert bool(jnp.isfinite(jax.jit(jax.grad(f))(jnp.array([3.0]))).all())


def test_plo_effort_releases_the_multiplier_when_safe():
    """Violation-only objective: without effort the plan keeps a high lam when safe (nothing
    pulls it down); with an effort penalty it is released toward 0."""
    sig = srl.constraint_signal(
        jnp.array([2.0]), 10.0, reward_dot=jnp.array([0.5]), gram=jnp.eye(1)
    )
    out = []
    for effort in (0.0, 0.05):
        ctrl = srl.plo(horizon=3, q_under=0.0, effort=effort, solver_steps=60)
        state = ctrl.init(1)._replace(lam=jnp.array([5.0]), plan=jnp.full((1, 3), 5.0))
        out.append(float(jax.jit(ctrl.update)(state, sig)[0][0]))
    assert out[0] > 4.0 and out[1] < out[0] - 1.0, out


def test_switch_selects_controller():
    sw = srl.switch([srl.lagrangian(1.0), srl.pid_lagrangian(kp=0.0, ki=0.0, kd=0.0)])
    sig = srl.constraint_signal(jnp.array([5.0]), 1.0)
    lam0, _ = sw.update(srl.choose(sw.init(1), 0), sig)
    lam1, _ = sw.update(srl.choose(sw.init(1), 1), sig)
    assert float(lam0[0]) == 4.0 and float(lam1[0]) == 0.0


def test_bad_controller_arguments_raise():
    with pytest.raises(ValueError, match="learning_rate"):
        srl.lagrangian(-1.0)
    with pytest.raises(ValueError, match="kp"):
        srl.pid_lagrangian(kp=-0.1)
    with pytest.raises(ValueError, match="horizon"):
        srl.plo(horizon=0)
    with pytest.raises(ValueError, match="effort"):
        srl.plo(effort=-1.0)
    with pytest.raises(TypeError, match="controllers"):
        srl.switch([])
