"""Robustness sets: `degrade_skeletons` degrades the given test sequences themselves (level 0 is
the clean set, every level the same samples), so a robustness curve measures the degradation
alone and never a fresh draw of the test data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import skel_gcn_jax as sg

CFG = sg.GeneratorConfig(num_frames=12, num_persons=2, second_person_prob=0.5)
KEY = jax.random.key(7)


@pytest.fixture(scope="module")
def raw_test():
    """The X-Sub test sequences before centring (as the experiment keeps them)."""
    ds = sg.make_synthetic_dataset(4, 1, CFG, key=jax.random.key(0))
    return sg.cross_subject_split(ds)[1].x


def _centre(x):
    return np.asarray(jax.jit(sg.centre_skeleton)(jnp.asarray(x)))


def test_level_zero_is_the_clean_test_set(raw_test):
    clean = _centre(raw_test)
    out = sg.degrade_skeletons(raw_test, key=KEY)
    np.testing.assert_array_equal(out, raw_test)
    np.testing.assert_array_equal(_centre(out), clean)
    assert out.dtype == raw_test.dtype


def test_dropout_levels_share_samples_and_nest(raw_test):
    observed = np.any(raw_test != 0, axis=1)
    prev = observed
    for level in (0.2, 0.4, 0.6):
        out = sg.degrade_skeletons(raw_test, key=KEY, dropout=level)
        kept = np.any(out != 0, axis=1)
        # surviving entries are the clean sequences' own values, absent persons stay absent
        np.testing.assert_array_equal(np.where(kept[:, None], raw_test, 0.0), out)
        assert not np.any(kept & ~observed)
        assert np.all(kept <= prev)  # one key: a stronger level drops a superset
        frac = 1.0 - kept.sum() / observed.sum()
        assert abs(frac - level) < 0.03
        prev = kept


def test_frame_loss_holds_the_same_sequences_frames(raw_test):
    out = sg.degrade_skeletons(raw_test, key=KEY, frame_sparsity=0.5)
    np.testing.assert_array_equal(out[:, :, 0], raw_test[:, :, 0])  # first frame always kept
    for n in range(0, len(raw_test), 7):
        for t in range(raw_test.shape[2]):
            # every frame is an earlier-or-equal frame of the same clean sequence
            assert any(np.array_equal(out[n, :, t], raw_test[n, :, s]) for s in range(t + 1)), (
                n,
                t,
            )
    lost = np.mean(np.any(out[:, :, 1:] != raw_test[:, :, 1:], axis=(1, 3, 4)))
    assert 0.3 < lost < 0.6


def test_noise_is_added_to_the_same_sequences_and_scales_with_the_level(raw_test):
    observed = np.any(raw_test != 0, axis=1, keepdims=True)
    d4 = sg.degrade_skeletons(raw_test, key=KEY, noise_std=0.04) - raw_test
    d8 = sg.degrade_skeletons(raw_test, key=KEY, noise_std=0.08) - raw_test
    assert np.all(d4[~np.broadcast_to(observed, d4.shape)] == 0)  # missing joints stay missing
    np.testing.assert_allclose(np.std(d4[np.broadcast_to(observed, d4.shape)]), 0.04, rtol=0.05)
    np.testing.assert_allclose(d8, 2.0 * d4, atol=1e-5)  # one key, the noise scales


def test_degrade_bad_inputs_are_named(raw_test):
    with pytest.raises(ValueError, match="x"):
        sg.degrade_skeletons(raw_test[:, :2], key=KEY)
    with pytest.raises(ValueError, match="dropout"):
        sg.degrade_skeletons(raw_test, key=KEY, dropout=1.0)
    with pytest.raises(ValueError, match="frame_sparsity"):
        sg.degrade_skeletons(raw_test, key=KEY, frame_sparsity=-0.1)
    with pytest.raises(ValueError, match="noise_std"):
        sg.degrade_skeletons(raw_test, key=KEY, noise_std=float("nan"))
