"""PLO: the Lagrange multiplier as the control input of a model predictive controller.

PLO (arXiv 2501.15217) frames each multiplier update as a multiplier feedback optimal control
problem (MFOCP): state = policy parameters, control = multiplier, dynamics = the policy-
gradient step, objective = constraint violation. The paper's prediction model is not public;
ours is the first-order response of the episode cost to one Lagrangian policy step
(documented in the README):

    u_i(lam) = (g_ci·g_r - sum_j lam_j g_ci·g_cj) / (||g_ci||^2 (1 + sum_j lam_j))
    J_ci[h+1] = J_ci[h] + a_i u_i(lam_h) + w_i

g_r, g_ci are the policy gradients of the reward and cost surrogates (the learner measures
them each iteration), the 1/(1 + sum lam) is the learner's normalised Lagrangian, `a_i` (step
gain, episode-cost units) and `w_i` (drift) are identified online from the observed cost
changes by exponentially weighted least squares. Over a horizon H the controller minimises

    sum_h q_over relu(J[h] - d)^2 + q_under relu(d - J[h])^2 (scaled by d)
          + r sum_h (Δlam_h)^2 + effort sum_h lam_h^2

over lam_0..lam_{H-1} in [0, lam_max] by projected Adam, applies lam_0 (receding horizon) and
warm-starts the next solve from the shifted plan. With r = 0, H = 1 and a symmetric cost
the solution is lam = max(0, rho + (J - d + w) / a) with rho = g_c·g_r/||g_c||^2 (the KKT
multiplier): a feed-forward term plus proportional feedback, which is why PLO generalises the
PID Lagrangian (the I-term is recovered by the drift estimate w).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._controllers import ConstraintSignal, MultiplierController, masked
from ._types import Array, Costs, Float


class PLOState(NamedTuple):
    lam: Costs
    plan: Float[Array, "costs horizon"]
    gain: Costs
    drift: Costs
    num: Costs
    den: Costs
    prev_cost: Costs
    prev_u: Costs
    count: Costs


def predicted_step(lam, reward_dot, gram, mask):
    """u(lam): the first-order, gain-normalised change of each cost for one policy step."""
    lam = jnp.where(mask, lam, 0.0)
    diag = jnp.maximum(jnp.diagonal(gram), 1e-12)
    drive = reward_dot - gram @ lam
    return jnp.where(mask, drive / (diag * (1.0 + jnp.sum(lam))), 0.0)


def rollout_prediction(plan, x0, gain, drift, reward_dot, gram, mask):
    """Predicted costs J[1..H] for a plan [costs, horizon] under the frozen linear model."""

    def step(x, lam):
        x = x + gain * predicted_step(lam, reward_dot, gram, mask) + drift
        return x, x

    _, xs = jax.lax.scan(step, x0, plan.T)
    return xs.T


def plo(
    horizon: int = 5,
    *,
    q_over: float = 1.0,
    q_under: float = 0.1,
    r: float = 0.05,
    effort: float = 0.0,
    lam_max: float = 20.0,
    gain_init: float = 1.0,
    gain_bounds: tuple[float, float] = (0.05, 100.0),
    forgetting: float = 0.9,
    solver_steps: int = 40,
    solver_lr: float = 0.1,
) -> MultiplierController:
    """The PLO multiplier controller (receding-horizon MPC on the predicted cost response)."""
    if horizon < 1:
        raise ValueError(f"horizon: expected >= 1, got {horizon}")
    if not 0.0 <= forgetting < 1.0:
        raise ValueError(f"forgetting: expected in [0, 1), got {forgetting}")
    if q_over <= 0 or q_under < 0 or r < 0 or effort < 0:
        raise ValueError(
            "q_over/q_under/r/effort: expected q_over > 0 and the others >= 0, got "
            f"{q_over}, {q_under}, {r}, {effort}"
        )
    if lam_max <= 0:
        raise ValueError(f"lam_max: expected > 0, got {lam_max}")
    opt = optax.adam(solver_lr)

    def init(k):
        z = jnp.zeros((k,), jnp.float32)
        return PLOState(z, jnp.zeros((k, horizon)), z + gain_init, z, z, z, z, z, z)

    def update(state: PLOState, s: ConstraintSignal):
        seen = state.count > 0
        dx = s.cost - state.prev_cost
        # Exponentially weighted least squares for dx ≈ gain * u + drift.
        num = jnp.where(seen, forgetting * state.num + state.prev_u * (dx - state.drift), 0.0)
        den = jnp.where(seen, forgetting * state.den + state.prev_u**2, 0.0)
        gain = jnp.where(den > 1e-6, num / jnp.maximum(den, 1e-6), state.gain)
        gain = jnp.clip(gain, *gain_bounds)
        resid = dx - gain * state.prev_u
        drift = jnp.where(seen, forgetting * state.drift + (1 - forgetting) * resid, 0.0)

        scale = jnp.maximum(jnp.abs(s.limit), 1.0)

        def objective(plan):
            xs = rollout_prediction(plan, s.cost, gain, drift, s.reward_dot, s.gram, s.mask)
            e = (xs - s.limit[:, None]) / scale[:, None]
            track = q_over * jax.nn.relu(e) ** 2 + q_under * jax.nn.relu(-e) ** 2
            prev = jnp.concatenate([state.lam[:, None], plan[:, :-1]], axis=1)
            smooth = r * (plan - prev) ** 2 + effort * plan**2
            return jnp.sum(jnp.where(s.mask[:, None], track + smooth, 0.0))

        def solve_step(carry, _):
            plan, opt_state = carry
            g = jax.grad(objective)(plan)
            upd, opt_state = opt.update(g, opt_state)
            plan = jnp.clip(optax.apply_updates(plan, upd), 0.0, lam_max)
            return (plan, opt_state), None

        plan0 = jnp.clip(state.plan, 0.0, lam_max)
        (plan, _), _ = jax.lax.scan(solve_step, (plan0, opt.init(plan0)), None, length=solver_steps)
        lam = plan[:, 0]
        u = predicted_step(lam, s.reward_dot, s.gram, s.mask)
        shifted = jnp.concatenate([plan[:, 1:], plan[:, -1:]], axis=1)
        new = PLOState(lam, shifted, gain, drift, num, den, s.cost, u, state.count + 1)
        return lam, new

    return masked(MultiplierController(init, update, uses_gradients=True))
