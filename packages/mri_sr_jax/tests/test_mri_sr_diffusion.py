"""Diffusion core against closed forms: schedules, parameterisations, DDPM / DDIM / ODE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mri_sr_jax as msr
from testkit import assert_trees_close

SCHEDULES = {"cosine": msr.cosine_schedule(), "linear": msr.linear_schedule()}
S2 = 0.25  # data variance of the Gaussian test distribution
SHAPE = (2, 2048)


def gaussian_eps(x, ab):
    """Exact E[eps | x_t] when x0 ~ N(0, S2): sigma x / (ab S2 + 1 - ab)."""
    ab = ab[:, None]
    return jnp.sqrt(1 - ab) * x / (ab * S2 + 1 - ab)


def test_linear_schedule_matches_discrete_ddpm_product():
    betas = np.linspace(1e-4, 0.02, 1000)
    discrete = np.cumprod(1 - betas)
    ab = np.asarray(msr.discrete_alpha_bars(msr.linear_schedule(), 1000))[1:]
    # equal up to the O(beta^2) terms of log(1 - beta): compare log alpha_bar
    np.testing.assert_allclose(np.log(ab), np.log(discrete), rtol=0.02, atol=2e-4)


def test_cosine_schedule_closed_form_and_betas():
    sch = msr.cosine_schedule(0.008)
    t = jnp.linspace(0, 0.99, 7)
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    np.testing.assert_allclose(sch.alpha_bar(t), f(np.asarray(t)) / f(0.0), rtol=1e-5)
    betas = msr.discrete_betas(sch, 50)
    ab = msr.discrete_alpha_bars(sch, 50)
    np.testing.assert_allclose(jnp.cumprod(1 - betas)[:-1], ab[1:-1], rtol=1e-4)


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_dlog_alpha_bar_is_the_derivative(name):
    sch = SCHEDULES[name]
    t = jnp.array([0.1, 0.4, 0.7, 0.9])
    auto = jax.vmap(jax.grad(lambda u: jnp.log(sch.alpha_bar(u))))(t)
    np.testing.assert_allclose(sch.dlog_alpha_bar(t), auto, rtol=1e-3)


@given(t=st.floats(0.02, 0.98), p=st.sampled_from(["eps", "x0", "v"]))
def test_parameterisations_round_trip(t, p):
    k1, k2 = jax.random.split(jax.random.key(0))
    x0, eps = jax.random.normal(k1, (2, 8)), jax.random.normal(k2, (2, 8))
    ab = msr.cosine_schedule().alpha_bar(jnp.full((2,), t))
    x_t = msr.q_sample(x0, jnp.full((2,), t), eps, msr.cosine_schedule())
    target = msr.training_target(x0, eps, ab, p)
    got_x0, got_eps = msr.to_x0_eps(target, x_t, ab, p)
    assert_trees_close((got_x0, got_eps), (x0, eps), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_ode_sampler_matches_gaussian_closed_form(name):
    """PF-ODE for Gaussian data: x_t / sqrt(ab S2 + 1 - ab) is invariant along trajectories."""
    sch = SCHEDULES[name]
    key = jax.random.key(1)
    x1 = jax.random.normal(key, SHAPE)
    out = jax.jit(lambda k: msr.ode_sample(gaussian_eps, SHAPE, sch, key=k, num_steps=400))(key)
    abmin, ab1 = sch.alpha_bar(1e-3), sch.alpha_bar(1.0)
    x_tmin = x1 * jnp.sqrt(abmin * S2 + 1 - abmin) / jnp.sqrt(ab1 * S2 + 1 - ab1)
    expected = jnp.sqrt(abmin) * S2 * x_tmin / (abmin * S2 + 1 - abmin)  # E[x0 | x_tmin]
    np.testing.assert_allclose(out, expected, atol=2e-3)


def test_ddim_converges_to_the_ode_solution():
    sch = SCHEDULES["cosine"]
    x1 = jax.random.normal(jax.random.key(2), SHAPE)
    expected = x1 * jnp.sqrt(S2) / jnp.sqrt(sch.alpha_bar(1.0) * S2 + 1 - sch.alpha_bar(1.0))
    errs = [
        float(
            jnp.abs(
                msr.ddim_sample(
                    gaussian_eps, SHAPE, sch, key=jax.random.key(0), num_steps=n, x_init=x1
                )
                - expected
            ).max()
        )
        for n in (10, 40)
    ]
    assert errs[1] < 0.1 and errs[1] < errs[0] / 2.5


@jax.jit
def _ddpm_gaussian(s, key):
    def eps_fn(x, ab):
        ab = ab[:, None]
        return jnp.sqrt(1 - ab) * x / (ab * s**2 + 1 - ab)

    return msr.ddpm_sample(eps_fn, SHAPE, SCHEDULES["cosine"], key=key, num_steps=250)


@given(s=st.floats(0.2, 1.5))
def test_ddpm_samples_have_the_data_variance(s):
    out = _ddpm_gaussian(jnp.float32(s), jax.random.key(3))
    assert abs(float(out.std()) - s) < 0.05 * s


@pytest.mark.parametrize("p", ["eps", "v"])
def test_ddpm_compiled_loop_equals_python_reference(p):
    sch = SCHEDULES["linear"]

    def fn(x, ab):
        return jnp.tanh(x) * jnp.sqrt(ab)[:, None]

    shape = (2, 16)
    fast = jax.jit(
        lambda k: msr.ddpm_sample(
            fn, shape, sch, key=k, num_steps=12, parameterisation=p, clip_x0=3.0
        )
    )(jax.random.key(4))
    ref = msr.ddpm_sample_reference(
        fn, shape, sch, key=jax.random.key(4), num_steps=12, parameterisation=p, clip_x0=3.0
    )
    assert_trees_close(fast, ref, rtol=1e-4, atol=1e-5)


def test_ddim_with_exact_x0_predictor_recovers_a_point_mass():
    target = jnp.linspace(-1, 1, 16)[None].repeat(2, 0)
    out = msr.ddim_sample(
        lambda x, ab: target,
        (2, 16),
        SCHEDULES["cosine"],
        key=jax.random.key(5),
        num_steps=3,
        parameterisation="x0",
    )
    np.testing.assert_allclose(out, target, atol=1e-5)


def test_noise_embedding_is_continuous_in_the_level():
    ab = jnp.array([0.5, 0.5 + 1e-6, 0.9])
    e = msr.noise_embedding(ab, 16)
    assert float(jnp.abs(e[0] - e[1]).max()) < 1e-2 < float(jnp.abs(e[0] - e[2]).max())


def test_sampler_and_schedule_errors_name_the_argument():
    sch = SCHEDULES["cosine"]
    with pytest.raises(ValueError, match="num_steps"):
        msr.ddim_sample(gaussian_eps, SHAPE, sch, key=jax.random.key(0), num_steps=0)
    with pytest.raises(ValueError, match="parameterisation"):
        msr.ddpm_sample(gaussian_eps, SHAPE, sch, key=jax.random.key(0), parameterisation="z")
    with pytest.raises(ValueError, match="eta"):
        msr.ddim_sample(gaussian_eps, SHAPE, sch, key=jax.random.key(0), eta=2.0)
    with pytest.raises(ValueError, match="solver"):
        msr.ode_sample(gaussian_eps, SHAPE, sch, key=jax.random.key(0), solver="rk9")
    with pytest.raises(ValueError, match="beta_start"):
        msr.linear_schedule(0.1, 0.01)
    with pytest.raises(ValueError, match="name"):
        msr.make_schedule("sigmoid")
