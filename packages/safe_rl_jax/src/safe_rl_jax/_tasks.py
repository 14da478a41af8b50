"""Small pure-JAX constrained tasks that train in seconds to minutes on a CPU.

Every task follows the `Environment` protocol (single instance, actions in [-1, 1]) and has
one cost channel that conflicts with its reward, so the multiplier matters:

- `PendulumSpeed`: swing-up pendulum (Gym's Pendulum-v1 dynamics); cost 1 per step with
  angular speed above `speed_limit`.
- `CartPolePosition`: continuous-force cart-pole rewarded for balancing *and* for being far
  right; cost 1 per step with the cart beyond `position_limit`.
- `PointGoalHazards`: a damped 2-D point mass rewarded for progress to a goal, with a hazard
  disc on the straight path; cost 1 per step inside the hazard.
"""

import dataclasses

import jax
import jax.numpy as jnp

from ._env import EnvState
from ._types import Action, Key


def _f32(x):
    return jnp.asarray(x, jnp.float32)


@dataclasses.dataclass(frozen=True)
class PendulumSpeed:
    """Pendulum swing-up with a speed limit (cost = 1[|theta_dot| > speed_limit])."""

    speed_limit: float = 4.0
    episode_length: int = 100
    observation_size: int = 3
    action_size: int = 1
    num_costs: int = 1

    def _obs(self, th, thdot):
        return jnp.stack([jnp.cos(th), jnp.sin(th), thdot / 8.0])

    def reset(self, key: Key) -> EnvState:
        k1, k2 = jax.random.split(key)
        th = jax.random.uniform(k1, (), minval=-jnp.pi, maxval=jnp.pi)
        thdot = jax.random.uniform(k2, (), minval=-1.0, maxval=1.0)
        return EnvState(
            (th, thdot), self._obs(th, thdot), _f32(0.0), jnp.zeros(1), jnp.bool_(False)
        )

    def step(self, state: EnvState, action: Action) -> EnvState:
        th, thdot = state.physics
        u = 2.0 * jnp.clip(action[0], -1.0, 1.0)
        g, dt = 10.0, 0.05
        angle = (th + jnp.pi) % (2 * jnp.pi) - jnp.pi
        reward = -(angle**2 + 0.1 * thdot**2 + 0.001 * u**2) / 10.0
        thdot = jnp.clip(thdot + (1.5 * g * jnp.sin(th) + 3.0 * u) * dt, -8.0, 8.0)
        th = th + thdot * dt
        cost = (jnp.abs(thdot) > self.speed_limit).astype(jnp.float32)[None]
        return EnvState((th, thdot), self._obs(th, thdot), reward, cost, jnp.bool_(False))


@dataclasses.dataclass(frozen=True)
class CartPolePosition:
    """Cart-pole rewarded for balance plus rightward position; cost = 1[x > position_limit]."""

    position_limit: float = 0.5
    episode_length: int = 100
    observation_size: int = 4
    action_size: int = 1
    num_costs: int = 1

    def reset(self, key: Key) -> EnvState:
        s = jax.random.uniform(key, (4,), minval=-0.05, maxval=0.05)
        return EnvState(s, s, _f32(0.0), jnp.zeros(1), jnp.bool_(False))

    def step(self, state: EnvState, action: Action) -> EnvState:
        x, xdot, th, thdot = state.physics
        force = 10.0 * jnp.clip(action[0], -1.0, 1.0)
        g, mc, mp, half_len, tau = 9.8, 1.0, 0.1, 0.5, 0.04
        total = mc + mp
        cos, sin = jnp.cos(th), jnp.sin(th)
        temp = (force + mp * half_len * thdot**2 * sin) / total
        thacc = (g * sin - cos * temp) / (half_len * (4.0 / 3.0 - mp * cos**2 / total))
        xacc = temp - mp * half_len * thacc * cos / total
        x, xdot = x + tau * xdot, xdot + tau * xacc
        th, thdot = th + tau * thdot, thdot + tau * thacc
        s = jnp.stack([x, xdot, th, thdot])
        done = (jnp.abs(th) > 0.21) | (jnp.abs(x) > 2.4)
        reward = jnp.where(done, 0.0, 1.0 + 0.5 * jnp.clip(x, -2.4, 2.4))
        cost = (x > self.position_limit).astype(jnp.float32)[None]
        return EnvState(s, s, reward, cost, done)


@dataclasses.dataclass(frozen=True)
class PointGoalHazards:
    """Point mass to a goal at (1, 0) past a hazard disc at the origin (cost = 1 inside it)."""

    hazard_radius: float = 0.4
    episode_length: int = 100
    observation_size: int = 8
    action_size: int = 2
    num_costs: int = 1

    def _obs(self, pos, vel):
        goal = jnp.array([1.0, 0.0])
        return jnp.concatenate([pos, vel, goal - pos, -pos])

    def reset(self, key: Key) -> EnvState:
        pos = jnp.array([-1.0, 0.0]) + jax.random.uniform(key, (2,), minval=-0.1, maxval=0.1)
        vel = jnp.zeros(2)
        return EnvState((pos, vel), self._obs(pos, vel), _f32(0.0), jnp.zeros(1), jnp.bool_(False))

    def step(self, state: EnvState, action: Action) -> EnvState:
        pos, vel = state.physics
        goal = jnp.array([1.0, 0.0])
        dt = 0.1
        vel = 0.8 * vel + dt * 2.0 * jnp.clip(action, -1.0, 1.0)
        speed = jnp.linalg.norm(vel)
        vel = vel * jnp.minimum(1.0, 1.0 / jnp.maximum(speed, 1e-6))
        new_pos = pos + dt * vel
        d_old, d_new = jnp.linalg.norm(goal - pos), jnp.linalg.norm(goal - new_pos)
        reward = 5.0 * (d_old - d_new) + 0.1 * (d_new < 0.15)
        cost = (jnp.linalg.norm(new_pos) < self.hazard_radius).astype(jnp.float32)[None]
        return EnvState((new_pos, vel), self._obs(new_pos, vel), reward, cost, jnp.bool_(False))


TASKS = {
    "pendulum_speed": PendulumSpeed,
    "cartpole_position": CartPolePosition,
    "point_goal_hazards": PointGoalHazards,
}


def make_task(name: str, **kwargs):
    """Build one of the pure-JAX tasks by name (`TASKS` lists them)."""
    if name not in TASKS:
        raise ValueError(f"name: expected one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name](**kwargs)
