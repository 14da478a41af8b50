"""PSNR / SSIM against scikit-image, HFEN properties and per-region metrics."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import mri_sr_jax as msr

RNG = np.random.default_rng(0)
A = RNG.random((32, 40)).astype(np.float32)


@given(noise=st.floats(0.01, 0.3), seed=st.integers(0, 50))
def test_psnr_and_ssim_match_skimage(noise, seed):
    b = np.clip(A + noise * np.random.default_rng(seed).standard_normal(A.shape), 0, 1)
    b = b.astype(np.float32)
    ref_ssim = structural_similarity(
        A, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    np.testing.assert_allclose(msr.ssim(jnp.asarray(b), jnp.asarray(A)), ref_ssim, rtol=1e-4)
    np.testing.assert_allclose(
        msr.psnr(jnp.asarray(b), jnp.asarray(A)),
        peak_signal_noise_ratio(A, b, data_range=1.0),
        rtol=1e-4,
    )


def test_hfen_zero_for_identical_and_grows_with_error():
    a = jnp.asarray(A)
    assert float(msr.hfen(a, a)) == 0.0
    assert float(msr.hfen(a + 0.01 * jnp.asarray(RNG.standard_normal(A.shape)), a)) < float(
        msr.hfen(a + 0.1 * jnp.asarray(RNG.standard_normal(A.shape)), a)
    )


def test_region_metrics_use_only_the_mask():
    a = jnp.asarray(A)
    b = a.at[:, 20:].add(0.2)
    masks = jnp.zeros(A.shape + (3,), bool).at[:, :12, 0].set(True).at[:, 20:, 1].set(True)
    masks = masks.at[:, :, 2].set(True)
    m = msr.image_metrics(b, a, masks)
    assert float(m["psnr/deep_wm"]) > 100 and float(m["hfen/deep_wm"]) < 1e-3
    np.testing.assert_allclose(m["psnr/cortex"], 10 * np.log10(1 / 0.04), rtol=1e-4)
    np.testing.assert_allclose(m["psnr/junction"], m["psnr"], rtol=1e-6)


@pytest.mark.shape_checks_off  # the library's own error, not jaxtyping's
def test_metric_errors_name_the_argument():
    with pytest.raises(ValueError, match="x, ref"):
        msr.image_metrics(jnp.zeros((4, 4)), jnp.zeros((4, 5)))
    with pytest.raises(ValueError, match="masks"):
        msr.image_metrics(jnp.zeros((4, 4)), jnp.zeros((4, 4)), jnp.zeros((4, 4, 2), bool))
