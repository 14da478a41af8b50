"""A robust constraint over continuous dynamics parameters: a cart near a wall (EPO's family).

A cart on a rail starts near 0 at rest and is rewarded for parking close to `target`, just
short of a wall at `wall`. Action = force in [-1, 1]; the nominal cart has mass 1 and no
friction. The true mass m and a constant push w (wind, slope) are unknown within
Y = [m_low, m_high] x [-w_max, w_max]; the constraint must hold for every (m, w) in Y: the
cart driven by the same forces must not pass the wall by more than a budget,
`sum_t relu(x_t(m, w) - wall) <= budget`.

Because the dynamics are linear, the position under (m, w) for the recorded forces is exact in
closed form from the nominal trajectory (x0 the start, t the step, dt the time step):
`x_t(m, w) = x0 + (x_t - x0) / m + w dt^2 t (t + 1) / (2 m)`, so the violation over Y comes from
one batch of nominal rollouts (open-loop robustness: the policy does not observe m or w).
"""

import dataclasses

import jax
import jax.numpy as jnp

from ._env import EnvState
from ._semi_infinite import Box, box


@dataclasses.dataclass(frozen=True)
class RobustCart:
    episode_length: int = 30
    dt: float = 0.1
    target: float = 0.8
    wall: float = 1.0
    budget: float = 0.1
    mass_range: tuple = (0.8, 1.5)
    max_push: float = 0.03
    observation_size: int = 3
    action_size: int = 1
    num_costs: int = 1  # EnvState.cost is unused: constraints come from `cost_at` per index y
    index_dim: int = 2

    @property
    def index_set(self) -> Box:
        lo, hi = self.mass_range
        return box([lo, -self.max_push], [hi, self.max_push])

    def threshold(self, y):
        return jnp.float32(self.budget)

    def position_under(self, state: EnvState, y):
        """The position of the pre-step state had the cart mass y[0] and a constant push y[1]."""
        x, _, x0, t = state.physics
        t = t.astype(jnp.float32)
        return x0 + (x - x0) / y[0] + y[1] * self.dt**2 * t * (t + 1) / (2 * y[0])

    def cost_at(self, state: EnvState, action, y):
        return jax.nn.relu(self.position_under(state, y) - self.wall)

    def _obs(self, phys):
        x, v, _, t = phys
        return jnp.stack([x, v, t.astype(jnp.float32) / self.episode_length])

    def reset(self, key) -> EnvState:
        x0 = jax.random.uniform(key, (), minval=-0.05, maxval=0.05)
        phys = (x0, jnp.float32(0.0), x0, jnp.int32(0))
        return EnvState(phys, self._obs(phys), jnp.float32(0.0), jnp.zeros(1), jnp.bool_(False))

    def step(self, state: EnvState, action) -> EnvState:
        x, v, x0, t = state.physics
        force = jnp.clip(action[0], -1.0, 1.0)
        v = v + self.dt * force
        x = x + self.dt * v
        phys = (x, v, x0, t + 1)
        reward = -jnp.abs(x - self.target) - 0.01 * force**2
        return EnvState(phys, self._obs(phys), reward, jnp.zeros(1), jnp.bool_(False))
