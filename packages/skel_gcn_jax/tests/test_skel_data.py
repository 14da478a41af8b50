"""Synthetic generator, forward kinematics, splits, the NTU reader and preprocessing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import skel_gcn_jax as sg
from skel_gcn_jax import _kinematics as kin

CFG = sg.GeneratorConfig(num_frames=12, num_persons=2)


@pytest.fixture(scope="module")
def dataset():
    return sg.make_synthetic_dataset(4, 1, CFG, key=jax.random.key(0))


def test_dataset_shapes_and_coverage(dataset):
    n = 12 * 4 * 3
    assert dataset.x.shape == (n, 3, 12, 25, 2) and dataset.x.dtype == np.float32
    assert np.isfinite(dataset.x).all()
    assert set(dataset.label) == set(range(12)) and len(sg.CLASS_NAMES) >= 10
    assert np.all(dataset.x[..., 1] == 0)  # no second person unless asked for
    # camera-space depth is in front of the camera
    assert dataset.x[:, 2, :, :, 0].min() > 1.5


def test_generator_is_deterministic_in_its_key():
    a = sg.make_synthetic_dataset(2, 1, CFG, key=jax.random.key(3))
    b = sg.make_synthetic_dataset(2, 1, CFG, key=jax.random.key(3))
    c = sg.make_synthetic_dataset(2, 1, CFG, key=jax.random.key(4))
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.allclose(a.x, c.x)


@given(arrays(np.float64, (3, 25, 3), elements=st.floats(-3.1, 3.1)))
def test_forward_kinematics_preserves_bone_lengths(angles):
    pos = kin.forward_kinematics(angles, kin.REST_OFFSETS, np.zeros((3, 3)))
    parents = kin.PARENTS[1:]
    bones = np.linalg.norm(pos[:, 1:] - pos[:, parents], axis=-1)
    np.testing.assert_allclose(
        bones,
        np.broadcast_to(np.linalg.norm(kin.REST_OFFSETS[1:], axis=-1), bones.shape),
        atol=1e-9,
    )


def test_handedness_mirrors_the_active_arm():
    subjects = sg.make_subjects(2, key=jax.random.key(0))._replace(
        left_handed=np.array([False, True])
    )
    cfg = sg.GeneratorConfig(
        num_frames=16, num_persons=1, noise_std_range=(0.0, 0.0), root_drift=0.0
    )
    x = sg.generate_skeletons(
        np.array([0, 0]), np.array([0, 1]), np.array([1, 1]), subjects, cfg, key=jax.random.key(1)
    )
    hand_motion = x[:, :, :, [7, 11], 0].std(axis=2).sum(axis=1)  # (2 subjects, left/right hand)
    assert hand_motion[0, 1] > 3 * hand_motion[0, 0]  # right-hander waves with the right hand
    assert hand_motion[1, 0] > 3 * hand_motion[1, 1]


def test_degradation_controls():
    subjects = sg.make_subjects(1, key=jax.random.key(0))
    labels = np.zeros(20, int)
    base = sg.GeneratorConfig(
        num_frames=16,
        num_persons=2,
        dropout_range=(0.3, 0.3),
        frame_sparsity=0.5,
        second_person_prob=1.0,
    )
    x = sg.generate_skeletons(labels, labels, labels, subjects, base, key=jax.random.key(0))
    missing = np.all(x[..., 0] == 0, axis=1).mean()
    assert 0.25 < missing < 0.35
    held = np.all(x[:, :, 1:] == x[:, :, :-1], axis=(1, 3, 4)).mean()
    assert 0.35 < held < 0.65
    assert np.any(x[..., 1] != 0)


def test_splits_separate_subjects_and_views(dataset):
    tr, te = sg.cross_subject_split(dataset)
    assert not set(tr.subject) & set(te.subject) and len(tr.label) + len(te.label) == len(
        dataset.label
    )
    tr, te = sg.cross_view_split(dataset)
    assert set(te.view) == {1} and 1 not in set(tr.view)


def test_bad_generator_inputs_are_named():
    subjects = sg.make_subjects(2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="labels"):
        sg.generate_skeletons(
            np.array([12]), np.array([0]), np.array([0]), subjects, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="subject_ids"):
        sg.generate_skeletons(
            np.array([0]), np.array([5]), np.array([0]), subjects, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="dropout_range"):
        sg.generate_skeletons(
            np.array([0]),
            np.array([0]),
            np.array([0]),
            subjects,
            sg.GeneratorConfig(dropout_range=(0.5, 0.2)),
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match="num_subjects"):
        sg.make_subjects(0, key=jax.random.key(0))


_NTU_TEXT = """2
1
72057594037931101 0 1 1 1 1 0 0.02 0.1 2
25
{joints0}
2
72057594037931101 0 1 1 1 1 0 0.02 0.1 2
25
{joints1}
72057594037931999 0 1 1 1 1 0 0.0 0.0 2
25
{joints2}
"""


def _joint_lines(offset):
    return "\n".join(
        f"{offset + v * 0.01:.3f} {v * 0.02:.3f} 3.5 250.1 200.2 1000.3 500.4 0.1 0.2 0.3 0.4 2"
        for v in range(25)
    )


def test_reads_a_handwritten_ntu_skeleton_file(tmp_path):
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text(
        _NTU_TEXT.format(
            joints0=_joint_lines(0.0), joints1=_joint_lines(0.5), joints2=_joint_lines(-1.0)
        )
    )
    x = sg.read_ntu_skeleton(path, num_persons=2)
    assert x.shape == (3, 2, 25, 2)
    np.testing.assert_allclose(x[:, 0, 3, 0], [0.03, 0.06, 3.5], rtol=1e-6)
    np.testing.assert_allclose(x[0, 1, 0, 0], 0.5)  # the body that moved ranks first
    np.testing.assert_allclose(x[:, 1, 0, 1], [-1.0, 0.0, 3.5])  # second body in frame 2 only
    assert np.all(x[:, 0, :, 1] == 0)


def test_ntu_write_read_round_trip_and_truncation(tmp_path, dataset):
    path = tmp_path / "a.skeleton"
    sg.write_ntu_skeleton(path, dataset.x[0])
    np.testing.assert_allclose(sg.read_ntu_skeleton(path), dataset.x[0], atol=1e-6)
    path.write_text("\n".join(path.read_text().splitlines()[:20]))
    with pytest.raises(ValueError, match="path"):
        sg.read_ntu_skeleton(path)


def test_centring_and_missing_joints(dataset):
    x = jnp.asarray(dataset.x[:4]).at[0, :, 3, 5, 0].set(0.0)
    c = np.asarray(jax.jit(sg.centre_skeleton)(x))
    np.testing.assert_allclose(c[:, :, 0, 1, 0], 0.0, atol=1e-6)
    assert np.all(c[0, :, 3, 5, 0] == 0) and np.all(c[..., 1] == 0)


_X2 = sg.make_synthetic_dataset(1, 1, CFG, key=jax.random.key(0), num_classes=2).x[:2]


@given(st.floats(-2, 2), st.floats(-2, 2))
def test_bone_stream_is_translation_invariant(dx, dy):
    x = jnp.asarray(_X2)
    shift = jnp.array([dx, dy, 0.0], jnp.float32)[None, :, None, None, None]
    shifted = x + shift * sg.valid_mask(x)
    np.testing.assert_allclose(sg.bone_stream(shifted), sg.bone_stream(x), atol=1e-4)
    np.testing.assert_allclose(sg.motion_stream(shifted), sg.motion_stream(x), atol=1e-4)


@pytest.mark.shape_checks_off  # the library's own error, not jaxtyping's
def test_streams_and_frame_sampling(dataset):
    x = jnp.asarray(dataset.x[:2])
    streams = sg.make_streams(x)
    assert set(streams) == {"joint", "bone", "joint_motion", "bone_motion"}
    assert np.all(np.asarray(streams["bone"])[:, :, :, sg.CENTER_JOINT] == 0)
    assert np.all(np.asarray(streams["joint_motion"])[:, :, -1] == 0)
    s = sg.sample_frames(x, 4)
    np.testing.assert_array_equal(s, x[:, :, np.array([1, 4, 7, 10])])
    r = sg.sample_frames(x, 4, key=jax.random.key(0))
    assert r.shape == (2, 3, 4, 25, 2)
    with pytest.raises(ValueError, match="x"):
        sg.sample_frames(x[:, :2], 4)
