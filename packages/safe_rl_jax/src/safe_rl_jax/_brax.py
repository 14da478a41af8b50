"""Brax environments as constrained tasks: the Safety-Gymnasium velocity cost.

`BraxVelocity(env, velocity_limit=...)` turns any brax `Env` (an object with `reset(rng)`,
`step(state, action)`, `observation_size`, `action_size`, returning a brax `State` with
`obs`, `reward`, `done`, `metrics`) into this library's `Environment`: the brax state becomes
`EnvState.physics` and every step costs `1[speed > velocity_limit]` (Safety-Gymnasium's
velocity tasks). The speed is the brax `x_velocity` metric (`|(x_velocity, y_velocity)|` for
the planar walkers ant and humanoid), or `speed_fn(prev, next)` for envs without that metric.

`brax_velocity_task(name)` builds the brax env by name with the Safety-Gymnasium threshold.
brax is an optional extra (`pip install safe-rl-jax[brax]`); only that function imports it.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ._env import EnvState

# Safety-Gymnasium velocity thresholds (m/s).
VELOCITY_THRESHOLDS = {
    "ant": 2.6222,
    "halfcheetah": 3.2096,
    "hopper": 0.7402,
    "humanoid": 1.4149,
    "swimmer": 0.2282,
    "walker2d": 2.3415,
}
_PLANAR = ("ant", "humanoid")


def metric_speed(planar: bool = False) -> Callable:
    """`speed_fn` reading brax's `x_velocity` (and `y_velocity` when `planar`) metrics."""

    def speed(prev, nxt):
        vx = nxt.metrics["x_velocity"]
        return jnp.hypot(vx, nxt.metrics["y_velocity"]) if planar else jnp.abs(vx)

    return speed


class BraxVelocity:
    """A brax env with cost `1[speed > velocity_limit]` per step (one cost channel)."""

    num_costs = 1

    def __init__(
        self,
        env,
        *,
        velocity_limit: float,
        episode_length: int = 1000,
        speed_fn: Callable | None = None,
    ):
        for name in ("reset", "step"):
            if not callable(getattr(env, name, None)):
                raise TypeError(f"env: expected a brax Env with a callable {name}, got {env!r}")
        if not velocity_limit > 0:
            raise ValueError(f"velocity_limit: expected > 0, got {velocity_limit}")
        if not isinstance(episode_length, int) or episode_length < 1:
            raise ValueError(f"episode_length: expected a positive int, got {episode_length!r}")
        if speed_fn is None:
            probe = jax.eval_shape(env.reset, jax.random.key(0))
            if "x_velocity" not in getattr(probe, "metrics", {}):
                raise ValueError(
                    "speed_fn: this brax env has no 'x_velocity' metric; pass speed_fn(prev, next)"
                )
            speed_fn = metric_speed(planar="y_velocity" in probe.metrics)
        self.env = env
        self.velocity_limit = float(velocity_limit)
        self.episode_length = episode_length
        self.speed_fn = speed_fn
        self.observation_size = int(env.observation_size)
        self.action_size = int(env.action_size)

    def _wrap(self, bstate, cost) -> EnvState:
        return EnvState(
            bstate,
            jnp.asarray(bstate.obs, jnp.float32),
            jnp.asarray(bstate.reward, jnp.float32),
            cost,
            jnp.asarray(bstate.done) > 0.5,
        )

    def reset(self, key) -> EnvState:
        # brax wants a raw uint32 key.
        raw = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        return self._wrap(self.env.reset(raw), jnp.zeros((1,), jnp.float32))

    def step(self, state: EnvState, action) -> EnvState:
        nxt = self.env.step(state.physics, action)
        speed = self.speed_fn(state.physics, nxt)
        cost = (speed > self.velocity_limit).astype(jnp.float32)[None]
        return self._wrap(nxt, cost)


def brax_velocity_task(
    name: str, *, episode_length: int = 1000, velocity_limit: float | None = None, **brax_kwargs
) -> BraxVelocity:
    """A Safety-Gymnasium-style velocity task from brax's env registry (imports brax)."""
    if name not in VELOCITY_THRESHOLDS:
        raise ValueError(f"name: expected one of {sorted(VELOCITY_THRESHOLDS)}, got {name!r}")
    from brax import envs  # optional dependency: only this function needs it

    env = envs.get_environment(name, **brax_kwargs)
    limit = VELOCITY_THRESHOLDS[name] if velocity_limit is None else velocity_limit
    return BraxVelocity(
        env,
        velocity_limit=limit,
        episode_length=episode_length,
        speed_fn=metric_speed(planar=name in _PLANAR),
    )
