"""Forward kinematics on the NTU-25 tree and the joint-angle templates of the synthetic actions.

Body frame: x to the subject's left, y up, z forward (metres). Each joint j carries a local
rotation `L_j` (Euler angles, applied as `R_y @ R_z @ R_x`) that turns the segments below it;
`G_j = G_parent(j) @ L_j` and a child's position is `p_c = p_j + G_j @ offset_c`.
Angle conventions, right side (the left side mirrors them):
  shoulder/hip: rx = -flex (forward raise), rz = -abduct (sideways raise), ry = -horizontal abduct;
  elbow: rx = -bend (forearm forward); knee: rx = +bend (shank backward); spine: rx = +bow.
Everything is numpy on the host: this is data generation, not part of any traced model.
"""

import numpy as np

NUM_JOINTS = 25
# Kinematic parents (rooted at spine_base, 0-based); follows the NTU bone list exactly.
PARENTS = np.array(
    [-1, 0, 20, 2, 20, 4, 5, 6, 20, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18, 1, 22, 7, 24, 11]
)
# Topological order (parents before children).
ORDER = (0, 1, 12, 16, 20, 13, 17, 2, 4, 8, 14, 18, 3, 5, 9, 15, 19, 6, 10, 7, 11, 22, 24, 21, 23)
# Rest offsets from parent to joint for a 1.75 m subject (arms hanging, standing).
_L = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.0, 0.25, 0.0],
        [0.0, 0.08, 0.0],
        [0.0, 0.14, 0.0],
        [0.18, -0.02, 0.0],
        [0.0, -0.28, 0.0],
        [0.0, -0.25, 0.0],
        [0.0, -0.07, 0.0],
        [-0.18, -0.02, 0.0],
        [0.0, -0.28, 0.0],
        [0.0, -0.25, 0.0],
        [0.0, -0.07, 0.0],
        [0.10, -0.05, 0.0],
        [0.0, -0.42, 0.0],
        [0.0, -0.40, 0.0],
        [0.0, -0.05, 0.12],
        [-0.10, -0.05, 0.0],
        [0.0, -0.42, 0.0],
        [0.0, -0.40, 0.0],
        [0.0, -0.05, 0.12],
        [0.0, 0.24, 0.0],
        [0.0, -0.04, -0.04],
        [0.0, -0.04, 0.04],
        [0.0, -0.04, -0.04],
        [0.0, -0.04, 0.04],
    ]
)
REST_OFFSETS = _L
REST_HEIGHT = 1.75
# Limb groups for per-subject proportions: spine/head, arms, legs, hands, shoulders/hips.
LIMB_GROUP = np.array([0, 0, 0, 0, 4, 1, 1, 3, 4, 1, 1, 3, 4, 2, 2, 2, 4, 2, 2, 2, 0, 3, 3, 3, 3])
# Left <-> right joint permutation (for mirroring handedness).
MIRROR = np.array(
    [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 16, 17, 18, 19, 12, 13, 14, 15, 20, 23, 24, 21, 22]
)
R_SHOULDER, R_ELBOW, L_SHOULDER, L_ELBOW = 8, 9, 4, 5
R_HIP, R_KNEE, L_HIP, L_KNEE = 16, 17, 12, 13
SPINE_MID, NECK = 1, 2
FEET = np.array([14, 15, 18, 19])

CLASS_NAMES = (
    "wave",
    "punch",
    "squat",
    "sit_down",
    "kick",
    "step_forward",
    "clap",
    "rub_hands",
    "jump",
    "bow",
    "touch_head_right",
    "touch_head_left",
)
NUM_CLASSES = len(CLASS_NAMES)
# Classes whose active limb follows the subject's handedness (mirrored for left-handers).
HANDED_CLASSES = (0, 1, 4, 5)
# Confusable pairs, for documentation and per-pair analysis.
CONFUSABLE_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (10, 11))


def euler_to_matrix(angles: np.ndarray) -> np.ndarray:
    """`(..., 3)` angles (rx, ry, rz) in radians -> `(..., 3, 3)` rotation `R_y @ R_z @ R_x`."""
    rx, ry, rz = angles[..., 0], angles[..., 1], angles[..., 2]
    one, zero = np.ones_like(rx), np.zeros_like(rx)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    mx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(*rx.shape, 3, 3)
    my = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(*rx.shape, 3, 3)
    mz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(*rx.shape, 3, 3)
    return my @ mz @ mx


def forward_kinematics(
    local_angles: np.ndarray, offsets: np.ndarray, root_position: np.ndarray
) -> np.ndarray:
    """Joint positions `(..., V, 3)` from local Euler angles `(..., V, 3)`.

    `offsets` is `(..., V, 3)` (or broadcastable), the rest offset of each joint from its parent;
    `root_position` is `(..., 3)`.
    """
    rot = euler_to_matrix(local_angles)
    glob = [None] * NUM_JOINTS
    pos = [None] * NUM_JOINTS
    for j in ORDER:
        p = PARENTS[j]
        if p < 0:
            glob[j], pos[j] = rot[..., j, :, :], root_position
        else:
            glob[j] = glob[p] @ rot[..., j, :, :]
            pos[j] = pos[p] + np.einsum("...ij,...j->...i", glob[p], offsets[..., j, :])
    return np.stack(pos, axis=-2)


def mirror_angles(angles: np.ndarray) -> np.ndarray:
    """Swap left and right joints and negate the ry, rz components (a sagittal mirror)."""
    out = angles[..., MIRROR, :].copy()
    out[..., 1:] *= -1.0
    return out


def _bump(phase, start, end):
    """Smooth 0 -> 1 -> 0 over [start, end] of the phase."""
    u = np.clip((phase - start) / (end - start), 0.0, 1.0)
    return np.sin(np.pi * u) ** 2


def _ramp(phase, start, end):
    u = np.clip((phase - start) / (end - start), 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _arm(a, shoulder, elbow, side, flex=0.0, abduct=0.0, horiz=0.0, bend=0.0):
    s = 1.0 if side == "l" else -1.0
    a[..., shoulder, 0] += -flex
    a[..., shoulder, 2] += s * abduct
    a[..., shoulder, 1] += s * horiz
    a[..., elbow, 0] += -bend


def class_angles(
    label: int, phase: np.ndarray, cycles: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Local angles `(n, T, V, 3)` and a vertical/forward root offset `(n, T, 3)` for one class.

    `phase` is `(n, T)` in [0, 1] (already time-warped); `cycles` `(n, 1)` scales the number of
    repetitions of periodic actions (the speed control). Handed classes are written right-handed.
    """
    d = np.deg2rad
    n, t = phase.shape
    a = np.zeros((n, t, NUM_JOINTS, 3))
    root = np.zeros((n, t, 3))
    osc = lambda k: np.sin(2 * np.pi * k * cycles * phase)  # noqa: E731
    env = _bump(phase, 0.0, 1.0) ** 0.3  # raise the limb, act, lower it
    if label == 0:  # wave: arm raised sideways, forearm swings side to side
        _arm(a, R_SHOULDER, R_ELBOW, "r", abduct=d(140) * env, bend=d(35 + 30 * osc(2)) * env)
    elif label == 1:  # punch: arm forward, elbow extends sharply
        punch = 0.5 + 0.5 * np.cos(2 * np.pi * 1.5 * cycles * phase)
        _arm(a, R_SHOULDER, R_ELBOW, "r", flex=d(85) * env, bend=d(110) * punch * env)
        _arm(a, L_SHOULDER, L_ELBOW, "l", flex=d(40) * env, bend=d(110) * env)
        a[..., SPINE_MID, 1] += d(15) * (1 - punch) * env
    elif label in (2, 3):  # squat (down-up, repeated) vs sit down (down and stay, leaning back)
        depth = (
            0.5 - 0.5 * np.cos(2 * np.pi * cycles * phase) if label == 2 else _ramp(phase, 0.2, 0.7)
        )
        for hip, knee in ((R_HIP, R_KNEE), (L_HIP, L_KNEE)):
            a[..., hip, 0] += -d(95) * depth
            a[..., knee, 0] += d(105) * depth
        a[..., SPINE_MID, 0] += d(35 if label == 2 else 5) * depth
        arm_flex = d(80) * depth if label == 2 else d(15) * depth
        _arm(a, R_SHOULDER, R_ELBOW, "r", flex=arm_flex)
        _arm(a, L_SHOULDER, L_ELBOW, "l", flex=arm_flex)
        if label == 3:
            root[..., 2] += -0.25 * depth
    elif label in (4, 5):  # kick (fast, straight leg, high) vs step forward (slow, bent knee)
        if label == 4:
            k = _bump(phase, 0.35, 0.6)
            a[..., R_HIP, 0] += -d(75) * k
            a[..., R_KNEE, 0] += d(70) * _bump(phase, 0.25, 0.45)
        else:
            k = _bump(phase, 0.2, 0.8)
            a[..., R_HIP, 0] += -d(35) * k
            a[..., R_KNEE, 0] += d(45) * k
            root[..., 2] += 0.35 * _ramp(phase, 0.3, 0.9)
    elif label in (6, 7):  # clap (hands meet and part) vs rub hands (hands together, circling)
        if label == 6:
            gap = 0.5 + 0.5 * np.cos(2 * np.pi * 2 * cycles * phase)
            for sh, el, side in ((R_SHOULDER, R_ELBOW, "r"), (L_SHOULDER, L_ELBOW, "l")):
                _arm(
                    a,
                    sh,
                    el,
                    side,
                    flex=d(75) * env,
                    horiz=d(-15 + 40 * gap) * env,
                    bend=d(30) * env,
                )
        else:
            for sh, el, side, sgn in (
                (R_SHOULDER, R_ELBOW, "r", 1.0),
                (L_SHOULDER, L_ELBOW, "l", -1.0),
            ):
                circ = 2 * np.pi * 2.5 * cycles * phase
                _arm(
                    a,
                    sh,
                    el,
                    side,
                    flex=(d(55) + sgn * d(5) * np.cos(circ)) * env,
                    horiz=(d(-12) + d(5) * np.sin(circ)) * env,
                    bend=d(60) * env,
                )
    elif label == 8:  # jump: crouch, take off, land
        hop = np.maximum(0.0, np.sin(2 * np.pi * cycles * phase))
        crouch = np.maximum(0.0, -np.sin(2 * np.pi * cycles * phase))
        for hip, knee in ((R_HIP, R_KNEE), (L_HIP, L_KNEE)):
            a[..., hip, 0] += -d(50) * crouch
            a[..., knee, 0] += d(70) * crouch
        _arm(a, R_SHOULDER, R_ELBOW, "r", flex=d(-30 + 90 * hop))
        _arm(a, L_SHOULDER, L_ELBOW, "l", flex=d(-30 + 90 * hop))
        root[..., 1] += 0.3 * hop
    elif label == 9:  # bow: upper body bends forward and back once
        k = _bump(phase, 0.15, 0.85)
        a[..., SPINE_MID, 0] += d(65) * k
        a[..., NECK, 0] += d(20) * k
    elif label in (10, 11):  # touch head with the right (10) or left (11) hand
        k = _bump(phase, 0.1, 0.9) ** 0.5
        _arm(a, R_SHOULDER, R_ELBOW, "r", flex=d(150) * k, abduct=d(20) * k, bend=d(125) * k)
        if label == 11:
            a = mirror_angles(a)
    else:
        raise ValueError(f"label: expected 0..{NUM_CLASSES - 1}, got {label}")
    return a, root
