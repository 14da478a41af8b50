"""The brax velocity-cost wrapper, on brax's own trivial `fast` pipeline env.

The locomotion envs (hopper, halfcheetah, ...) take 80+ s to compile on this 2-core CPU, so
the wrapper is tested on brax's `fast` env (a real brax `PipelineEnv` whose state is a brax
pipeline state: velocity += dt when the action is positive).
"""

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import safe_rl_jax as srl

LIMIT = 0.05
# `brax.envs` imports jaxopt, which warns that it is unmaintained (third party, not ours).
pytestmark = pytest.mark.filterwarnings("ignore:JAXopt is no longer maintained:DeprecationWarning")


def _fast_env():
    from brax import envs

    return srl.BraxVelocity(
        envs.get_environment("fast"),
        velocity_limit=LIMIT,
        episode_length=8,
        speed_fn=lambda prev, nxt: jnp.abs(nxt.pipeline_state.xd.vel[0]),
    )


def test_brax_velocity_cost_under_jit_matches_the_dynamics():
    env = _fast_env()
    srl.check_environment(env)
    assert (env.observation_size, env.action_size, env.num_costs) == (2, 1, 1)

    @jax.jit
    def unroll(key, actions):
        def one(s, a):
            n = env.step(s, a)
            return n, (n.cost[0], n.reward, n.obs)

        return jax.lax.scan(one, env.reset(key), actions)[1]

    actions = jnp.array([1.0, -1.0, 1.0, 1.0, 1.0, -1.0])[:, None]
    cost, reward, obs = (np.asarray(x) for x in unroll(jax.random.key(0), actions))
    # Reference: speed grows by dt = 0.02 on every positive action.
    speed = 0.02 * np.cumsum(np.asarray(actions[:, 0]) > 0)
    np.testing.assert_allclose(obs[:, 1], speed, atol=1e-6)
    np.testing.assert_array_equal(cost, (speed > LIMIT).astype(np.float32))
    np.testing.assert_allclose(reward, np.cumsum(speed * 0.02), atol=1e-6)


def test_brax_env_trains_with_the_constrained_learner():
    env = _fast_env()
    # (with the one-MLP reward + cost critic option, so a trainer exercises it)
    cfg = srl.PPOConfig(
        num_envs=4, num_epochs=1, num_minibatches=2, hidden=(8,), shared_critic=True
    )
    trainer = srl.make_trainer(env, srl.lagrangian(0.5), cfg)
    state = trainer.init(jax.random.key(1), 1.0)
    assert "cost_value" not in state.params
    assert state.params["value"]["head"]["kernel"].shape[1] == 2
    state, m = jax.jit(lambda s: trainer.run(s, 2))(state)
    assert m["episode_cost"].shape == (2, 1)
    assert bool(jnp.all(jnp.isfinite(m["episode_return"])))
    assert 0.0 <= float(m["episode_cost"][-1, 0]) <= env.episode_length


def test_brax_wrapper_errors_name_the_argument():
    from brax import envs

    with pytest.raises(ValueError, match="speed_fn"):
        srl.BraxVelocity(envs.get_environment("fast"), velocity_limit=1.0)
    with pytest.raises(ValueError, match="velocity_limit"):
        srl.BraxVelocity(envs.get_environment("fast"), velocity_limit=0.0, speed_fn=abs)
    with pytest.raises(TypeError, match="env"):
        srl.BraxVelocity(object(), velocity_limit=1.0)
    with pytest.raises(ValueError, match="name"):
        srl.brax_velocity_task("cartpole")
    assert srl.VELOCITY_THRESHOLDS["hopper"] == pytest.approx(0.7402)


def test_core_imports_without_brax():
    # Static check of the package sources (a subprocess import of jax would cost seconds):
    # brax may only be imported inside a function body, never at module level, so
    # `import safe_rl_jax` works without the extra.
    src = pathlib.Path(srl.__file__).parent
    offenders = []
    for path in sorted(src.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module-level statements only (incl. if/try blocks)
            for sub in ast.walk(node):
                if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                    break
                names = (
                    [a.name for a in sub.names]
                    if isinstance(sub, ast.Import)
                    else [sub.module or ""]
                    if isinstance(sub, ast.ImportFrom)
                    else []
                )
                if any(n == "brax" or n.startswith("brax.") for n in names):
                    offenders.append(f"{path.name}:{sub.lineno}")
    assert len(list(src.glob("*.py"))) > 10 and not offenders, offenders
