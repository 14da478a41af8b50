"""Ship route planning with a pollution cap at every point of the sea (EPO's family).

A ship crosses a sea Y = [0, 1]^2 from a port near (0.1, 0.5) to a port at (0.9, 0.5). It is a
damped point mass; action = thrust in [-1, 1]^2. It emits `e = e0 + e1 |a|^2` per step (idle
plus engine load), spread over the sea with a Gaussian plume, so the pollution at sea point y
is `P(y) = sum_t e_t gain exp(-|p_t - y|^2 / (2 plume^2))`. The cap must hold at every point:
P(y) <= u(y), where `u` is `cap` in open water and drops to `protected_cap` at protected
sites (a marine reserve on the straight route and one off it). Reward = progress to the
destination - fuel, and the episode terminates on arrival, so the ship must detour around the
reserve rather than slow down.
"""

import dataclasses

import jax
import jax.numpy as jnp

from ._env import EnvState
from ._semi_infinite import Box, box

_START = (0.1, 0.5)
_GOAL = (0.9, 0.5)


@dataclasses.dataclass(frozen=True)
class ShipRoute:
    episode_length: int = 40
    idle_emission: float = 0.3
    load_emission: float = 0.3
    gain: float = 0.3
    plume: float = 0.05
    cap: float = 1.5
    protected_cap: float = 0.05
    site_radius: float = 0.07
    sites: tuple = ((0.45, 0.52), (0.72, 0.8))
    observation_size: int = 6
    action_size: int = 2
    num_costs: int = 1  # EnvState.cost is unused: constraints come from `cost_at` per index y
    index_dim: int = 2

    @property
    def index_set(self) -> Box:
        return box([0.0, 0.0], [1.0, 1.0])

    def threshold(self, y):
        sites = jnp.asarray(self.sites, jnp.float32)
        near = jnp.max(jnp.exp(-jnp.sum((y[None] - sites) ** 2, -1) / (2 * self.site_radius**2)))
        return self.cap - (self.cap - self.protected_cap) * near

    def emission(self, action):
        a = jnp.clip(action, -1.0, 1.0)
        return self.idle_emission + self.load_emission * jnp.sum(a**2) / 2.0

    def cost_at(self, state: EnvState, action, y):
        pos = state.physics[0]
        plume = jnp.exp(-jnp.sum((pos - y) ** 2) / (2 * self.plume**2))
        return self.emission(action) * self.gain * plume

    def _obs(self, pos, vel):
        return jnp.concatenate([pos, vel, jnp.asarray(_GOAL) - pos])

    def reset(self, key) -> EnvState:
        pos = jnp.asarray(_START) + jax.random.uniform(key, (2,), minval=-0.02, maxval=0.02)
        vel = jnp.zeros(2)
        return EnvState(
            (pos, vel), self._obs(pos, vel), jnp.float32(0.0), jnp.zeros(1), jnp.bool_(False)
        )

    def step(self, state: EnvState, action) -> EnvState:
        pos, vel = state.physics
        a = jnp.clip(action, -1.0, 1.0)
        vel = 0.7 * vel + 0.02 * a
        new_pos = jnp.clip(pos + vel, 0.0, 1.0)
        goal = jnp.asarray(_GOAL)
        d_old, d_new = jnp.linalg.norm(goal - pos), jnp.linalg.norm(goal - new_pos)
        arrived = d_new < 0.05
        reward = 5.0 * (d_old - d_new) - 0.01 * jnp.sum(a**2) + 1.0 * arrived
        return EnvState((new_pos, vel), self._obs(new_pos, vel), reward, jnp.zeros(1), arrived)
