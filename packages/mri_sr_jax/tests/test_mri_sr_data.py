"""Bundled MRI data, region masks, slab split, degradation pipeline and NIfTI affines."""

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mri_sr_jax as msr

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def template():
    return msr.load_mni152()


def test_mni152_template_ships_offline(template):
    assert template.t1.shape == (197, 233, 189) == template.gm.shape == template.wm.shape
    for vol in template[:3]:
        assert vol.dtype == np.float32 and vol.min() == 0.0 and vol.max() == 1.0
    np.testing.assert_allclose(np.diag(template.affine), [1, 1, 1, 1])
    masks = np.asarray(msr.region_masks(template.gm[:, :, 95], template.wm[:, :, 95]))
    assert masks.shape == (197, 233, 3) and masks.sum(axis=(0, 1)).min() > 100
    # deep WM and cortex are disjoint by construction
    assert not np.any(masks[..., 0] & masks[..., 1])


def test_dipy_slice_ships_offline():
    s = msr.load_dipy_t1_slice()
    assert s.shape == (256, 256) and s.max() == 1.0 and s.std() > 0.05


@given(start=st.integers(0, 80), length=st.integers(1, 20), gap=st.integers(0, 4))
def test_slab_split_holds_out_slabs_with_a_gap(start, length, gap):
    train, test = msr.slab_split(100, [(start, start + length)], gap=gap)
    assert set(test) == set(range(start, start + length))
    assert np.all(np.abs(train[:, None] - test[None, :]) > gap)
    assert len(train) + len(test) + min(gap, start) + min(gap, 100 - start - length) == 100


def test_slab_split_errors():
    with pytest.raises(ValueError, match="test_slabs"):
        msr.slab_split(10, [(5, 20)])


def test_train_val_test_split_keeps_both_held_out_sets_apart(template):
    train, test, val, train_idx, test_idx, val_idx = msr.train_val_test_split(
        template, [(90, 96)], [(70, 74)], gap=2, val_stride=2, crop=(48, 48)
    )
    assert set(test_idx) == set(range(90, 96)) and list(val_idx) == [70, 72]
    held = set(range(68, 76)) | set(range(88, 98))  # slabs plus their gaps
    assert not held & set(train_idx.tolist())
    assert train[0].shape == (len(train_idx), 48, 48) and val[0].shape == (2, 48, 48)
    np.testing.assert_array_equal(test[0], msr.axial_slices(template, test_idx, (48, 48))[0])
    with pytest.raises(ValueError, match="val_stride"):
        msr.train_val_test_split(template, [(90, 96)], [(70, 74)], val_stride=0)


def test_held_out_split_keeps_test_slabs_out_of_training(template):
    (t1, gm, wm), (t1_test, _, _), train_idx, test_idx = msr.held_out_split(
        template, [(90, 96)], gap=3, min_brain=0.3, train_stride=4, test_stride=2, crop=(32, 32)
    )
    np.testing.assert_array_equal(test_idx, [90, 92, 94])
    assert np.abs(train_idx[:, None] - np.arange(90, 96)[None]).min() > 3
    assert t1.shape == gm.shape == wm.shape == (len(train_idx), 32, 32)
    assert t1_test.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="train_stride"):
        msr.held_out_split(template, [(90, 96)], train_stride=0)


IMG = jnp.asarray(np.random.default_rng(0).random((24, 24)), jnp.float32)
ZERO = jnp.zeros((24, 24))


@pytest.mark.parametrize("method", ["blur", "kspace"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_resolution_loss_keeps_a_constant_image(method, scale):
    d = msr.degrade(jnp.full((24, 24), 0.7), ZERO, ZERO, msr.DegradeConfig(scale, method), key=KEY)
    assert d.lr.shape == (24 // scale, 24 // scale)
    np.testing.assert_allclose(d.lr, 0.7, atol=1e-5)


@given(strength=st.floats(0.0, 0.5), seed=st.integers(0, 100))
def test_bias_field_is_positive_smooth_with_unit_geometric_or_arithmetic_mean(strength, seed):
    b = msr.bias_field(jax.random.key(seed), (24, 24), strength)
    assert float(b.min()) > 0.0
    assert abs(float(jnp.log(b).mean())) < 1e-4
    assert float(jnp.abs(jnp.diff(jnp.log(b), axis=0)).max()) < 1.5 * strength + 1e-6
    # the arithmetic normalisation: the same field rescaled to unit mean
    a = msr.bias_field(jax.random.key(seed), (24, 24), strength, mean="arithmetic")
    assert abs(float(a.mean()) - 1.0) < 1e-5
    np.testing.assert_allclose(a * b.mean(), b, rtol=1e-5)


def test_radial_warp_identity_at_zero_and_displacement_grows_with_radius():
    w, disp = msr.radial_warp(IMG, jnp.asarray(0.0))
    np.testing.assert_allclose(w, IMG, atol=1e-6)
    _, disp = msr.radial_warp(IMG, jnp.asarray(0.05))
    assert float(disp[12, 12]) < 0.1 < float(disp[0, 0])


def test_rician_noise_floor_on_zero_signal():
    n = msr.rician(jnp.zeros((200, 200)), 0.1, key=KEY)
    assert abs(float(n.mean()) - 0.1 * np.sqrt(np.pi / 2)) < 0.003


def test_reduced_contrast_shrinks_grey_white_difference():
    gm = jnp.zeros((24, 24)).at[:, :12].set(1.0)
    wm = 1.0 - gm
    img = 0.4 * gm + 0.8 * wm
    out = msr.reduce_contrast(img, gm, wm, 0.5)
    assert abs(float(out[0, 20] - out[0, 0]) - 0.2) < 1e-5


def test_degrade_returns_maps_and_bad_config_raises():
    cfg = msr.DegradeConfig(
        scale=2, noise_sigma=0.02, bias_strength=0.2, warp_strength=0.03, contrast_reduction=0.3
    )
    d = msr.degrade(IMG, ZERO, ZERO, cfg, key=KEY)
    assert d.bias.shape == d.gradwarp.shape == d.hr.shape == (24, 24)
    assert float(d.gradwarp.max()) > 0
    with pytest.raises(ValueError, match="scale"):
        msr.degrade(IMG, ZERO, ZERO, msr.DegradeConfig(scale=5), key=KEY)
    with pytest.raises(ValueError, match="bias_mean"):
        msr.degrade(IMG, ZERO, ZERO, msr.DegradeConfig(bias_mean="median"), key=KEY)
    with pytest.raises(ValueError, match="method"):
        msr.degrade(IMG, ZERO, ZERO, msr.DegradeConfig(method="sinc"), key=KEY)
    with pytest.raises(ValueError, match="noise_sigma"):
        msr.degrade(IMG, ZERO, ZERO, msr.DegradeConfig(noise_sigma=-1.0), key=KEY)


def test_elastic_augment_keeps_shape_and_zero_amplitude_is_identity_up_to_gamma():
    stack = jnp.stack([IMG, ZERO, ZERO], -1)
    out = msr.elastic_intensity_augment(stack, key=KEY, amplitude=0.0, gamma_range=0.0)
    np.testing.assert_allclose(out, stack, atol=1e-6)


@given(scale=st.sampled_from([2, 3, 4]), ox=st.floats(-100, 100), z=st.floats(0.5, 3.0))
def test_affines_keep_the_field_of_view(scale, ox, z):
    aff = np.array([[z, 0, 0, ox], [0, z, 0, -20.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])
    hi = msr.highres_affine(aff, scale)
    np.testing.assert_allclose(msr.lowres_affine(hi, scale), aff, atol=1e-9)
    np.testing.assert_allclose(nib.affines.voxel_sizes(hi), [z / scale, z / scale, 2.0])
    # the edge of LR voxel 0 (index -1/2) is the edge of HR voxel 0
    np.testing.assert_allclose(aff @ [-0.5, -0.5, 0, 1], hi @ [-0.5, -0.5, 0, 1], atol=1e-9)


def test_superresolve_nifti_updates_affine_and_shape():
    data = np.random.default_rng(1).random((6, 8, 3)).astype(np.float32) * 100
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    out = msr.superresolve_nifti(img, lambda s: np.kron(s, np.ones((2, 2))), 2)
    assert out.shape == (12, 16, 3)
    np.testing.assert_allclose(out.header.get_zooms(), (1.0, 1.0, 3.0))
    np.testing.assert_allclose(np.asarray(out.dataobj)[::2, ::2], data, rtol=1e-5, atol=1e-4)
    bad = nib.Nifti1Image(np.full((4, 4, 2), np.nan, np.float32), np.eye(4))
    with pytest.raises(ValueError, match="img"):
        msr.superresolve_nifti(bad, lambda s: s, 1)
    with pytest.raises(ValueError, match="sr_fn"):
        msr.superresolve_nifti(img, lambda s: s, 2)
