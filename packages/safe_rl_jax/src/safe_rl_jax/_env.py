"""The environment protocol: a pure, single-instance environment with a vector cost channel.

Write your own environment by implementing four attributes and two pure functions; the
learner `vmap`s them over environments, seeds and cost limits, so they must be jittable and
must not batch themselves.

```python
class MyEnv:
    observation_size = 3     # int
    action_size = 1          # int, actions live in [-1, 1]^action_size
    num_costs = 1            # int, length of the cost vector returned at every step
    episode_length = 100     # int, the learner truncates episodes here

    def reset(self, key) -> EnvState: ...
    def step(self, state: EnvState, action) -> EnvState: ...
```

`EnvState.physics` is any pytree your dynamics need; `obs`, `reward`, `cost` (shape
`[num_costs]`, one entry per constraint, cost >= 0 by convention) and `done` (termination,
not truncation) describe the transition that produced the state. Once `done` is true the
learner masks all later steps of the episode, so `step` may return anything after it.
"""

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from ._types import Action, Array, Bool, Costs, Float, Key, Obs


class EnvState(NamedTuple):
    """One environment instance after a transition (or after reset)."""

    physics: Any
    obs: Obs
    reward: Float[Array, ""]
    cost: Costs
    done: Bool[Array, ""]


@runtime_checkable
class Environment(Protocol):
    """What the constrained learner needs from an environment (see the module docstring)."""

    observation_size: int
    action_size: int
    num_costs: int
    episode_length: int

    def reset(self, key: Key) -> EnvState: ...

    def step(self, state: EnvState, action: Action) -> EnvState: ...


def check_environment(env: Any) -> None:
    """Host-side check that `env` follows the protocol; raises TypeError/ValueError naming what."""
    for name in ("observation_size", "action_size", "num_costs", "episode_length"):
        value = getattr(env, name, None)
        if not isinstance(value, int) or value < 1:
            raise TypeError(f"env.{name}: expected a positive int, got {value!r}")
    for name in ("reset", "step"):
        if not callable(getattr(env, name, None)):
            raise TypeError(f"env.{name}: expected a callable, got {getattr(env, name, None)!r}")
    state = jax.eval_shape(env.reset, jax.random.key(0))
    expect = {
        "obs": (env.observation_size,),
        "reward": (),
        "cost": (env.num_costs,),
        "done": (),
    }
    for field, shape in expect.items():
        got = getattr(state, field).shape
        if got != shape:
            raise ValueError(f"env.reset(key).{field}: expected shape {shape}, got {got}")
    action = jax.ShapeDtypeStruct((env.action_size,), jnp.float32)
    nxt = jax.eval_shape(env.step, state, action)
    if jax.tree.structure(nxt) != jax.tree.structure(state):
        raise ValueError("env.step: must return an EnvState with the same structure as reset")
