import dataclasses

import jax
import jax.numpy as jnp
import pytest

import safe_rl_jax as srl


@pytest.mark.parametrize("name", sorted(srl.TASKS))
def test_tasks_follow_protocol(name):
    env = srl.make_task(name)
    srl.check_environment(env)
    assert isinstance(env, srl.Environment)
    st = jax.jit(env.reset)(jax.random.key(0))
    nxt = jax.jit(env.step)(st, jnp.zeros(env.action_size))
    assert nxt.cost.shape == (env.num_costs,)
    assert bool(jnp.all(nxt.cost >= 0))


def test_pendulum_speed_cost_fires_above_limit():
    env = srl.PendulumSpeed(speed_limit=1.0)
    st = env.reset(jax.random.key(0))._replace(physics=(jnp.float32(0.0), jnp.float32(5.0)))
    assert float(env.step(st, jnp.zeros(1)).cost[0]) == 1.0
    st = st._replace(physics=(jnp.float32(0.0), jnp.float32(0.0)))
    assert float(env.step(st, jnp.zeros(1)).cost[0]) == 0.0


def test_point_hazard_cost_inside_disc_only():
    env = srl.PointGoalHazards()
    st = env.reset(jax.random.key(0))
    inside = st._replace(physics=(jnp.zeros(2), jnp.zeros(2)))
    assert float(env.step(inside, jnp.zeros(2)).cost[0]) == 1.0
    assert float(env.step(st, jnp.zeros(2)).cost[0]) == 0.0


def test_cartpole_position_cost_and_termination():
    env = srl.CartPolePosition(position_limit=0.5)
    st = env.reset(jax.random.key(0))
    right = st._replace(physics=jnp.array([1.0, 0.0, 0.0, 0.0]))
    assert float(env.step(right, jnp.zeros(1)).cost[0]) == 1.0
    fallen = st._replace(physics=jnp.array([0.0, 0.0, 0.5, 0.0]))
    assert bool(env.step(fallen, jnp.zeros(1)).done)


def test_bad_environment_raises_naming_field():
    @dataclasses.dataclass(frozen=True)
    class Bad(srl.PendulumSpeed):
        num_costs: int = 2  # but step returns one cost

    with pytest.raises(ValueError, match="cost"):
        srl.check_environment(Bad())
    with pytest.raises(TypeError, match="episode_length"):
        srl.check_environment(srl.PendulumSpeed(episode_length=0))
    with pytest.raises(ValueError, match="name"):
        srl.make_task("nope")
