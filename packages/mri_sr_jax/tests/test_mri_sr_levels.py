"""Noise-level sampling on the sampler's grid (`num_levels`) and the stable PF-ODE first step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mri_sr_jax as msr

SCH = msr.cosine_schedule()
BATCH = msr.SRBatch(x0=jnp.zeros((64, 4, 4, 1)), cond=jnp.zeros((64, 4, 4, 1)))


def _ab_model(x_t, cond, alpha_bar):
    """Outputs its own noise level, so an x0-loss against zeros is mean(alpha_bar)."""
    return jnp.zeros_like(x_t) + alpha_bar[:, None, None, None]


@pytest.mark.parametrize("levels", [1, 2, 4])
def test_grid_levels_only_visit_the_ddim_grid(levels):
    loss, _ = jax.jit(
        lambda k: msr.diffusion_loss(
            _ab_model, BATCH, k, schedule=SCH, parameterisation="x0", num_levels=levels
        )
    )(jax.random.key(3))
    grid = np.asarray(SCH.alpha_bar(jnp.arange(1, levels + 1) / levels))
    # mean of 64 draws from the grid values lies between their min and max, and for one
    # level equals it exactly
    if levels == 1:
        np.testing.assert_allclose(loss, grid[0], rtol=1e-5)
    assert grid.min() - 1e-7 <= float(loss) <= grid.max() + 1e-7
    continuous, _ = msr.diffusion_loss(
        _ab_model, BATCH, jax.random.key(3), schedule=SCH, parameterisation="x0"
    )
    assert abs(float(continuous) - float(loss)) > 1e-3


def test_bad_level_arguments_raise():
    with pytest.raises(ValueError, match="num_levels"):
        msr.diffusion_loss(_ab_model, BATCH, jax.random.key(0), schedule=SCH, num_levels=0)
    with pytest.raises(ValueError, match="level_fraction"):
        msr.diffusion_loss(
            _ab_model, BATCH, jax.random.key(0), schedule=SCH, num_levels=2, level_fraction=1.5
        )


def test_few_step_ode_is_exact_for_a_point_mass():
    """For an exact x0-denoiser of a point mass x0 = c the ODE returns c at any step count."""
    c = 0.7

    def point_mass(x, ab):
        return jnp.full_like(x, c)

    for n in (1, 2, 3):
        out = msr.ode_sample(
            point_mass, (2, 8), SCH, key=jax.random.key(n), num_steps=n, parameterisation="x0"
        )
        np.testing.assert_allclose(out, c, atol=1e-4)
