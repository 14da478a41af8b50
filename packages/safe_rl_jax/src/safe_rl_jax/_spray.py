"""Agricultural spraying over a field strip: a semi-infinite constrained task (EPO's family).

A sprayer flies one pass over a strip Y = [0, 1] at constant speed in `episode_length` steps
(starting at 0, ending at 1). Action = rate in [-1, 1]: it releases chemical at
`(rate + 1) / 2`. Chemical lands with a Gaussian footprint, so the deposit at field point y is
`deposit(y) = sum_t rate_t * gain * exp(-(x_t - y)^2 / (2 width^2))`. The constraint must hold
at every field point: deposit(y) >= demand(y), i.e. per-step cost
`c(s, a, y) = demand(y) / T - rate * gain * kernel(x - y)` with threshold d(y) = 0.
Reward = -chemical - pump energy (`-0.1 rate - 0.05 rate^2`). `demand` has a base level plus
a hot spot (e.g. a pest focus).
"""

import dataclasses

import jax
import jax.numpy as jnp

from ._env import EnvState
from ._semi_infinite import Box, box


@dataclasses.dataclass(frozen=True)
class SprayField:
    episode_length: int = 30
    width: float = 0.08
    gain: float = 0.25
    base_demand: float = 0.4
    hot_spot: float = 0.7
    hot_width: float = 0.06
    observation_size: int = 2
    action_size: int = 1
    num_costs: int = 1  # the cost channel in EnvState is the field-wide shortfall proxy
    index_dim: int = 1

    @property
    def index_set(self) -> Box:
        return box([0.0], [1.0])

    def demand(self, y):
        return self.base_demand + 0.8 * jnp.exp(
            -((y[0] - self.hot_spot) ** 2) / (2 * self.hot_width**2)
        )

    def threshold(self, y):
        return jnp.float32(0.0)

    def _rate(self, action):
        return (jnp.clip(action[0], -1.0, 1.0) + 1.0) / 2.0

    def cost_at(self, state: EnvState, action, y):
        x = state.physics[0]
        kernel = jnp.exp(-((x - y[0]) ** 2) / (2 * self.width**2))
        return self.demand(y) / self.episode_length - self._rate(action) * self.gain * kernel

    @property
    def nominal_speed(self) -> float:
        return 1.0 / (self.episode_length - 1)

    def reset(self, key) -> EnvState:
        x = jax.random.uniform(key, (), minval=0.0, maxval=0.01)
        phys = (x, jnp.int32(0))
        return EnvState(phys, self._obs(phys), jnp.float32(0.0), jnp.zeros(1), jnp.bool_(False))

    def _obs(self, phys):
        x, t = phys
        return jnp.stack([x, t.astype(jnp.float32) / self.episode_length])

    def step(self, state: EnvState, action) -> EnvState:
        x, t = state.physics
        rate = self._rate(action)
        phys = (jnp.clip(x + self.nominal_speed, 0.0, 1.0), t + 1)
        reward = -0.1 * rate - 0.05 * rate**2
        return EnvState(phys, self._obs(phys), reward, jnp.zeros(1), jnp.bool_(False))


def spray_cost_fn(env: SprayField):
    """`cost_fn(prev, action, next, index)` for the learner: one cost per working-set slot."""

    def cost_fn(prev, action, nxt, index):
        return jax.vmap(lambda y: env.cost_at(prev, action, y))(index)

    return cost_fn
