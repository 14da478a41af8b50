"""A synthetic NTU-style skeleton dataset from forward kinematics, with cross-subject and
cross-view splits.

No skeleton dataset ships inside a PyPI package, so sequences are generated: subjects (height
1.5-1.9 m, +-5 % limb proportions, handedness) perform joint-angle templates (see
`_kinematics.CLASS_NAMES`, with confusable pairs) under per-sample amplitude, speed, random
monotone time warp and root drift, are seen by a camera in one of three yaw bins (NTU's -45, 0,
+45 degrees) and degraded by joint noise, joint dropout (zeroed, as NTU marks missing joints) and
frame sparsity (sample-and-hold). Output tensors follow NTU: `(N, 3, T, 25, M)` in camera metres.
"""

from typing import NamedTuple

import jax
import numpy as np

from . import _kinematics as kin


class GeneratorConfig(NamedTuple):
    """Controls of the generator; every range is sampled uniformly per sequence."""

    num_frames: int = 32
    num_persons: int = 2
    amplitude_range: tuple[float, float] = (0.8, 1.2)
    speed_range: tuple[float, float] = (0.75, 1.35)
    time_warp: float = 0.35  # 0 = linear time; larger = stronger random monotone warp
    root_drift: float = 0.15  # metres of random root translation over a sequence
    yaw_bins: tuple[float, ...] = (-45.0, 0.0, 45.0)
    yaw_jitter: float = 5.0
    noise_std_range: tuple[float, float] = (0.01, 0.02)
    dropout_range: tuple[float, float] = (0.0, 0.0)  # fraction of (frame, joint) entries zeroed
    frame_sparsity: float = 0.0  # fraction of frames lost, filled by holding the last frame
    second_person_prob: float = 0.0


DEFAULT_GENERATOR = GeneratorConfig()


class Subjects(NamedTuple):
    height: np.ndarray  # (S,) metres
    limb_scale: np.ndarray  # (S, 5) per limb group
    left_handed: np.ndarray  # (S,) bool


class SkeletonDataset(NamedTuple):
    x: np.ndarray  # (N, 3, T, 25, M) float32
    label: np.ndarray  # (N,) int32
    subject: np.ndarray  # (N,) int32
    view: np.ndarray  # (N,) int32, index into the yaw bins


def _rng(key: jax.Array) -> np.random.Generator:
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def _validate(config: GeneratorConfig) -> None:
    if not 2 <= config.num_frames <= 300:
        raise ValueError(f"config.num_frames: expected 2..300, got {config.num_frames}")
    if config.num_persons not in (1, 2):
        raise ValueError(f"config.num_persons: expected 1 or 2, got {config.num_persons}")
    lo, hi = config.dropout_range
    if not 0.0 <= lo <= hi < 1.0:
        raise ValueError(f"config.dropout_range: expected 0 <= lo <= hi < 1, got {(lo, hi)}")
    if not 0.0 <= config.frame_sparsity < 1.0:
        raise ValueError(f"config.frame_sparsity: expected [0, 1), got {config.frame_sparsity}")
    if config.second_person_prob and config.num_persons < 2:
        raise ValueError("config.second_person_prob: needs num_persons == 2")


def make_subjects(num_subjects: int, *, key: jax.Array, left_handed_prob: float = 0.3) -> Subjects:
    """Draw `num_subjects` body shapes and handednesses."""
    if num_subjects < 1:
        raise ValueError(f"num_subjects: expected >= 1, got {num_subjects}")
    rng = _rng(key)
    return Subjects(
        height=rng.uniform(1.5, 1.9, num_subjects),
        limb_scale=rng.uniform(0.95, 1.05, (num_subjects, 5)),
        left_handed=rng.random(num_subjects) < left_handed_prob,
    )


def _warped_phase(rng, n, t, strength):
    """Random monotone maps [0, 1] -> [0, 1] sampled at t frames (smooth, strictly increasing)."""
    knots = 6
    inc = np.exp(strength * rng.standard_normal((n, knots)))
    cdf = np.concatenate([np.zeros((n, 1)), np.cumsum(inc, axis=1)], axis=1)
    cdf /= cdf[:, -1:]
    grid = np.linspace(0.0, 1.0, knots + 1)
    u = np.linspace(0.0, 1.0, t)
    return np.stack([np.interp(u, grid, c) for c in cdf])


def _yaw_matrix(yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    z, o = np.zeros_like(yaw), np.ones_like(yaw)
    return np.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*yaw.shape, 3, 3)


def _pose_sequences(rng, labels, subj, subjects, config, t):
    n = len(labels)
    phase = _warped_phase(rng, n, t, config.time_warp)
    start = rng.uniform(0.0, 0.15, (n, 1))
    end = rng.uniform(0.85, 1.0, (n, 1))
    phase = np.clip((phase - start) / (end - start), 0.0, 1.0)
    cycles = rng.uniform(*config.speed_range, (n, 1))
    amp = rng.uniform(*config.amplitude_range, (n, 1, 1, 1))
    angles = np.zeros((n, t, kin.NUM_JOINTS, 3))
    root = np.zeros((n, t, 3))
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        a, r = kin.class_angles(int(c), phase[idx], cycles[idx])
        angles[idx], root[idx] = a, r
    angles = angles * amp
    flip = subjects.left_handed[subj] & np.isin(labels, kin.HANDED_CLASSES)
    angles[flip] = kin.mirror_angles(angles[flip])
    root[flip, :, 0] *= -1.0
    scale = subjects.height[subj] / kin.REST_HEIGHT
    offsets = kin.REST_OFFSETS[None] * (
        scale[:, None, None] * subjects.limb_scale[subj][:, kin.LIMB_GROUP][..., None]
    )
    drift = rng.uniform(-1.0, 1.0, (n, 1, 3)) * np.array([1.0, 0.0, 1.0]) * config.root_drift
    root = root + drift * np.linspace(0.0, 1.0, t)[None, :, None]
    pos = kin.forward_kinematics(angles, offsets[:, None], np.zeros((n, t, 3)))
    ground = pos[..., kin.FEET, 1].min(axis=-1, keepdims=True)  # keep the lowest foot on the floor
    rest_ground = pos[:, :1, kin.FEET, 1].min(axis=-1, keepdims=True)
    pos[..., 1] -= np.where(labels[:, None, None] == 8, rest_ground, ground)
    return pos + root[:, :, None, :]


def generate_skeletons(
    labels: np.ndarray,
    subject_ids: np.ndarray,
    view_ids: np.ndarray,
    subjects: Subjects,
    config: GeneratorConfig = DEFAULT_GENERATOR,
    *,
    key: jax.Array,
) -> np.ndarray:
    """Sequences `(N, 3, T, 25, M)` (float32, camera metres) for the given labels/subjects/views."""
    _validate(config)
    labels, subject_ids, view_ids = (
        np.asarray(a, np.int64) for a in (labels, subject_ids, view_ids)
    )
    if not labels.shape == subject_ids.shape == view_ids.shape or labels.ndim != 1:
        raise ValueError(
            f"labels, subject_ids, view_ids: expected equal 1-D shapes, got "
            f"{labels.shape}, {subject_ids.shape}, {view_ids.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= kin.NUM_CLASSES):
        raise ValueError(f"labels: expected values in 0..{kin.NUM_CLASSES - 1}")
    if subject_ids.size and (subject_ids.min() < 0 or subject_ids.max() >= len(subjects.height)):
        raise ValueError(f"subject_ids: expected values in 0..{len(subjects.height) - 1}")
    if view_ids.size and (view_ids.min() < 0 or view_ids.max() >= len(config.yaw_bins)):
        raise ValueError(f"view_ids: expected values in 0..{len(config.yaw_bins) - 1}")
    rng = _rng(key)
    n, t, m = len(labels), config.num_frames, config.num_persons
    people = [_pose_sequences(rng, labels, subject_ids, subjects, config, t)]
    if m == 2:  # an optional bystander standing beside the actor, idling
        idle = _pose_sequences(
            rng,
            np.full(n, 9),
            subject_ids,
            subjects,
            config._replace(amplitude_range=(0.0, 0.1)),
            t,
        )
        idle = idle + np.array([0.9, 0.0, 0.2])
        present = rng.random(n) < config.second_person_prob
        people.append(np.where(present[:, None, None, None], idle, np.nan))
    yaw = np.deg2rad(
        np.asarray(config.yaw_bins)[view_ids] + rng.uniform(-1, 1, n) * config.yaw_jitter
    )
    rot = _yaw_matrix(np.pi + yaw)  # the subject faces the camera at yaw 0
    cam = np.stack(
        [rng.uniform(-0.2, 0.2, n), rng.uniform(-0.9, -0.6, n), rng.uniform(2.6, 3.4, n)], -1
    )
    out = []
    for p in people:
        q = np.einsum("nij,ntvj->ntvi", rot, p) + cam[:, None, None, :]
        q = q + rng.normal(size=q.shape) * rng.uniform(*config.noise_std_range, (n, 1, 1, 1))
        rate = rng.uniform(*config.dropout_range, (n, 1, 1))
        q = np.where((rng.random(q.shape[:3]) < rate)[..., None], 0.0, q)
        out.append(np.nan_to_num(q, nan=0.0))
    x = np.stack(out, axis=-1).transpose(0, 3, 1, 2, 4)  # (N, 3, T, V, M)
    if config.frame_sparsity > 0:
        x = hold_frames(x, config.frame_sparsity, rng)
    return x.astype(np.float32)


def hold_frames(x: np.ndarray, sparsity: float, rng: np.random.Generator) -> np.ndarray:
    """Drop a `sparsity` fraction of frames (never the first) and hold the last kept frame."""
    n, t = x.shape[0], x.shape[2]
    return _hold(x, rng.random((n, t)) >= sparsity)


def _hold(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Frames of `x` `(N, 3, T, V, M)` where `keep` `(N, T)` is False repeat the last kept one."""
    keep = keep.copy()
    keep[:, 0] = True
    t = x.shape[2]
    src = np.maximum.accumulate(np.where(keep, np.arange(t)[None], 0), axis=1)
    return np.take_along_axis(x, src[:, None, :, None, None], axis=2)


def degrade_skeletons(
    x: np.ndarray,
    *,
    key: jax.Array,
    frame_sparsity: float = 0.0,
    dropout: float = 0.0,
    noise_std: float = 0.0,
) -> np.ndarray:
    """Degraded copies of the given sequences `(N, 3, T, 25, M)` (camera metres, before centring).

    Gaussian noise of std `noise_std` metres on every observed joint (added to the generator's
    own noise), then a `dropout` fraction of (frame, joint) entries per person zeroed, then a
    `frame_sparsity` fraction of frames lost (sample-and-hold, as the generator's). Missing joints
    (all-zero) stay zero, and all three zero leaves `x` unchanged. The random numbers depend on
    `key` only, not on the levels: with one key the dropped entries and lost frames nest as the
    level grows and the noise scales, so a robustness curve degrades the same samples throughout.
    """
    x = np.asarray(x)
    if x.ndim != 5 or x.shape[1] != 3 or x.shape[3] != kin.NUM_JOINTS:
        raise ValueError(f"x: expected shape (N, 3, T, 25, M), got {x.shape}")
    if not 0.0 <= frame_sparsity < 1.0:
        raise ValueError(f"frame_sparsity: expected [0, 1), got {frame_sparsity}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected [0, 1), got {dropout}")
    if not noise_std >= 0.0:
        raise ValueError(f"noise_std: expected >= 0, got {noise_std}")
    rng = _rng(key)
    n, _, t, v, m = x.shape
    z = rng.standard_normal(x.shape).astype(x.dtype)
    u_drop = rng.random((n, 1, t, v, m))
    u_keep = rng.random((n, t))
    observed = np.any(x != 0, axis=1, keepdims=True)
    out = np.where(observed & (u_drop >= dropout), x + x.dtype.type(noise_std) * z, 0.0)
    out = _hold(out, u_keep >= frame_sparsity) if frame_sparsity > 0 else out
    return out.astype(x.dtype)


def make_synthetic_dataset(
    num_subjects: int,
    repeats: int = 1,
    config: GeneratorConfig = DEFAULT_GENERATOR,
    *,
    key: jax.Array,
    num_classes: int = kin.NUM_CLASSES,
) -> SkeletonDataset:
    """Every (class, subject, view) combination `repeats` times, shuffled."""
    if not 2 <= num_classes <= kin.NUM_CLASSES:
        raise ValueError(f"num_classes: expected 2..{kin.NUM_CLASSES}, got {num_classes}")
    if repeats < 1:
        raise ValueError(f"repeats: expected >= 1, got {repeats}")
    k_subj, k_gen, k_perm = jax.random.split(key, 3)
    subjects = make_subjects(num_subjects, key=k_subj)
    grid = np.stack(
        np.meshgrid(
            np.arange(num_classes),
            np.arange(num_subjects),
            np.arange(len(config.yaw_bins)),
            np.arange(repeats),
            indexing="ij",
        ),
        -1,
    ).reshape(-1, 4)
    grid = grid[_rng(k_perm).permutation(len(grid))]
    label, subject, view = grid[:, 0], grid[:, 1], grid[:, 2]
    x = generate_skeletons(label, subject, view, subjects, config, key=k_gen)
    return SkeletonDataset(
        x, label.astype(np.int32), subject.astype(np.int32), view.astype(np.int32)
    )


def _take(ds: SkeletonDataset, mask: np.ndarray) -> SkeletonDataset:
    return SkeletonDataset(*(a[mask] for a in ds))


def cross_subject_split(
    ds: SkeletonDataset, train_subjects: np.ndarray | None = None
) -> tuple[SkeletonDataset, SkeletonDataset]:
    """X-Sub: train on `train_subjects` (default: even subject ids), test on the others."""
    if train_subjects is None:
        train_subjects = np.unique(ds.subject)[::2]
    mask = np.isin(ds.subject, train_subjects)
    if mask.all() or not mask.any():
        raise ValueError("train_subjects: the split leaves the train or test set empty")
    return _take(ds, mask), _take(ds, ~mask)


def cross_view_split(
    ds: SkeletonDataset, test_views: tuple[int, ...] = (1,)
) -> tuple[SkeletonDataset, SkeletonDataset]:
    """X-View: test on the `test_views` yaw bins (default the frontal one, as NTU's camera 1)."""
    mask = ~np.isin(ds.view, test_views)
    if mask.all() or not mask.any():
        raise ValueError("test_views: the split leaves the train or test set empty")
    return _take(ds, mask), _take(ds, ~mask)
