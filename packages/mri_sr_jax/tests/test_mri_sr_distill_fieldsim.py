"""Field-strength simulation (issue 11): reuse of `degrade`, map properties, corrections, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mri_sr_jax as msr

H = 32


def phantom(b=2, seed=0):
    """Smooth disc phantom with binary, disjoint GM (ring) and WM (core) masks."""
    ii, jj = np.meshgrid(np.arange(H), np.arange(H), indexing="ij")
    r = np.hypot(ii - (H - 1) / 2, jj - (H - 1) / 2)
    wm = (r < 7).astype(np.float32)
    gm = ((r >= 7) & (r < 12)).astype(np.float32)
    t1 = 0.8 * wm + 0.5 * gm
    rng = np.random.default_rng(seed)
    t1 = t1[None] * (1 + 0.05 * rng.random((b, 1, 1), np.float32))
    return (
        jnp.asarray(t1),
        jnp.asarray(np.repeat(gm[None], b, 0)),
        jnp.asarray(np.repeat(wm[None], b, 0)),
    )


def test_integer_scale_reproduces_degrade_batch_and_real_scales_change_the_grid():
    hr, gm, wm = phantom()
    cfg = msr.FieldSimConfig(scale=4, noise_sigma=0.02, bias_strength=0.2, warp_strength=0.05)
    sim = msr.simulate_lowfield(hr, gm, wm, cfg, key=jax.random.key(3))
    ref = msr.degrade_batch(hr, gm, wm, msr.DegradeConfig(**cfg._asdict()), key=jax.random.key(3))
    np.testing.assert_allclose(sim.lr, ref.lr, atol=1e-6)
    np.testing.assert_allclose(sim.bias, ref.bias, rtol=1e-6)
    np.testing.assert_allclose(jnp.abs(sim.displacement), ref.gradwarp, atol=1e-4)
    np.testing.assert_allclose(msr.lowres(hr[0], 2), msr.blur_decimate(hr[0], 2), atol=1e-6)
    sim25 = msr.simulate_lowfield(hr, gm, wm, cfg._replace(scale=2.5), key=jax.random.key(3))
    assert sim25.lr.shape == (2, 13, 13) == (2, *msr.lowres_shape((H, H), 2.5))
    g = msr.guidance_maps(sim25)
    assert g.shape == (2, H, H, 2) and len(msr.GUIDANCE) == 2
    cond = msr.guided_condition(sim25.lr, g, (H, H))
    assert cond.shape == (2, H, H, 3)


@given(seed=st.integers(0, 10_000), strength=st.floats(0.0, 0.5))
def test_bias_field_is_positive_unit_geometric_mean_and_smooth(seed, strength):
    hr, gm, wm = phantom()
    # the bias lives on the HR grid whatever the scale: share the compiled x4 noisy simulator
    cfg = msr.FieldSimConfig(scale=4, bias_strength=strength, noise_sigma=0.02)
    bias = msr.simulate_lowfield(hr, gm, wm, cfg, key=jax.random.key(seed)).bias
    assert float(bias.min()) > 0
    np.testing.assert_allclose(jnp.log(bias).mean(axis=(1, 2)), 0.0, atol=1e-4)
    # a cubic polynomial of log-bias on [-1, 1]^2: second differences are O(strength / H^2)
    lb = np.asarray(jnp.log(bias))
    d2 = np.abs(lb[:, 2:, :] - 2 * lb[:, 1:-1, :] + lb[:, :-2, :]).max()
    assert d2 <= 40 * strength * (2 / H) ** 2 + 1e-5


@given(k=st.floats(-0.08, 0.08))
def test_warp_is_small_and_radial_unwarp_inverts_it(k):
    ii, jj = np.meshgrid(np.arange(H), np.arange(H), indexing="ij")
    img = jnp.asarray(np.exp(-((ii - 14.0) ** 2 + (jj - 17.0) ** 2) / 60.0), jnp.float32)
    kk = jnp.float32(k)
    warped, mag = msr.radial_warp(img, kk)
    disp = msr.radial_displacement((H, H), kk)
    np.testing.assert_allclose(jnp.abs(disp), mag, atol=1e-4)
    rmax = (H - 1) / 2
    assert float(jnp.abs(disp).max()) <= abs(k) * 2**1.5 * rmax + 1e-4
    back = msr.radial_unwarp(warped, kk)
    inner = np.hypot(ii - rmax, jj - rmax) < 0.8 * rmax
    err = np.abs(np.asarray(back) - np.asarray(img))[inner].max()
    assert err < 0.02 + 0.5 * abs(k)  # linear-interpolation error of two resamplings


def test_noise_lowers_snr_as_configured_and_contrast_is_reduced_by_the_fraction():
    hr, gm, wm = phantom()
    base = msr.FieldSimConfig(scale=4, noise_sigma=0.0, bias_strength=0.0, warp_strength=0.0)
    # noise 1e-6 (far below the tolerance): the compiled noisy simulator of the other tests
    clean = msr.simulate_lowfield(
        hr, gm, wm, base._replace(noise_sigma=1e-6), key=jax.random.key(0)
    ).lr
    for sigma in (0.02, 0.05):
        noisy = msr.simulate_lowfield(
            hr, gm, wm, base._replace(noise_sigma=sigma), key=jax.random.key(1)
        ).lr
        fg = np.asarray(clean) > 0.3  # Rician ~ Gaussian where the signal >> sigma
        std = np.asarray(noisy - clean)[fg].std()
        assert 0.8 * sigma < std < 1.2 * sigma
    for frac in (0.0, 0.3, 0.6):
        sim = msr.simulate_lowfield(
            hr, gm, wm, base._replace(scale=1, contrast_reduction=frac), key=jax.random.key(0)
        )
        low = np.asarray(sim.lr)
        c0 = (hr * wm).sum((1, 2)) / wm.sum((1, 2)) - (hr * gm).sum((1, 2)) / gm.sum((1, 2))
        c1 = (low * wm).sum((1, 2)) / wm.sum((1, 2)) - (low * gm).sum((1, 2)) / gm.sum((1, 2))
        np.testing.assert_allclose(c1, (1 - frac) * np.asarray(c0), rtol=1e-4)


def test_correction_maps_undo_bias_and_warp():
    hr, gm, wm = phantom()
    cfg = msr.FieldSimConfig(
        scale=1, noise_sigma=0.0, bias_strength=0.3, warp_strength=0.08, contrast_reduction=0.0
    )
    sim = msr.simulate_lowfield(hr, gm, wm, cfg, key=jax.random.key(5))
    fixed = msr.correct_lowfield(sim.lr, sim)
    inner = np.asarray(wm[0]) > 0  # away from the phantom's edges
    before = np.abs(np.asarray(sim.lr - hr))[:, inner].mean()
    after = np.abs(np.asarray(fixed - hr))[:, inner].mean()
    assert after < 0.25 * before


@pytest.mark.shape_checks_off  # the library's own error, not jaxtyping's
def test_bad_inputs_name_the_argument():
    hr, gm, wm = phantom()
    key = jax.random.key(0)
    bad = [
        (msr.FieldSimConfig(scale=0.5), "scale"),
        (msr.FieldSimConfig(noise_sigma=-1.0), "noise_sigma"),
        (msr.FieldSimConfig(warp_strength=0.2), "warp_strength"),
        (msr.FieldSimConfig(contrast_reduction=1.0), "contrast_reduction"),
    ]
    for cfg, name in bad:
        with pytest.raises(ValueError, match=name):
            msr.simulate_lowfield(hr, gm, wm, cfg, key=key)
    small = (a[:, :20, :20] for a in (hr, gm, wm))
    with pytest.raises(ValueError, match="hr"):
        msr.simulate_lowfield(*small, msr.FieldSimConfig(scale=8), key=key)
    with pytest.raises(ValueError, match="hr"):
        msr.simulate_lowfield(hr.at[0, 0, 0].set(jnp.nan), gm, wm, msr.FieldSimConfig(), key=key)
    with pytest.raises(ValueError, match="gm, wm"):
        msr.simulate_lowfield(hr, gm[:, :-1], wm, msr.FieldSimConfig(), key=key)
    with pytest.raises(ValueError, match="guidance"):
        msr.guided_condition(hr[:, ::2, ::2], jnp.zeros((2, H, H - 1, 2)), (H, H))
    with pytest.raises(ValueError, match="lr"):
        msr.guided_condition(hr[0], jnp.zeros((2, H, H, 2)), (H, H))
