"""Read (and write) NTU RGB+D `.skeleton` text files.

Format (public, Kinect v2 SDK dump): the frame count, then for every frame the body count and for
every body one line of 10 body values (bodyID, clippedEdges, hand states, lean, trackingState),
the joint count (25) and one line of 12 values per joint: x y z (camera metres), depthX depthY,
colorX colorY, orientation wxyz, trackingState. The reader keeps the `num_persons` most active
bodies (largest coordinate variance, as CTR-GCN's preprocessing does) and returns `(3, T, 25, M)`
with zeros for absent bodies, so real files feed the same pipeline as the synthetic generator.
"""

import os

import numpy as np

_BODY_FIELDS = 10
_JOINT_FIELDS = 12


def read_ntu_skeleton(path: str | os.PathLike, *, num_persons: int = 2) -> np.ndarray:
    """Parse one `.skeleton` file into a float32 `(3, T, 25, num_persons)` array."""
    if num_persons < 1:
        raise ValueError(f"num_persons: expected >= 1, got {num_persons}")
    with open(path) as f:
        tokens = f.read().split("\n")
    lines = [ln.strip() for ln in tokens if ln.strip()]
    pos = 0

    def take() -> str:
        nonlocal pos
        if pos >= len(lines):
            raise ValueError(
                f"path: {os.fspath(path)!r} ends early (line {pos + 1}); "
                "not a complete NTU .skeleton file"
            )
        pos += 1
        return lines[pos - 1]

    try:
        num_frames = int(take())
        bodies: dict[str, np.ndarray] = {}
        for t in range(num_frames):
            for _ in range(int(take())):
                body = take().split()
                if len(body) != _BODY_FIELDS:
                    raise ValueError(f"expected {_BODY_FIELDS} body values, got {len(body)}")
                num_joints = int(take())
                joints = np.array([take().split()[:3] for _ in range(num_joints)], dtype=np.float32)
                track = bodies.setdefault(body[0], np.zeros((num_frames, 25, 3), np.float32))
                track[t, : min(num_joints, 25)] = joints[:25]
    except ValueError as err:
        raise ValueError(
            f"path: {os.fspath(path)!r} is not a valid NTU .skeleton file ({err})"
        ) from err
    if num_frames < 1:
        raise ValueError(f"path: {os.fspath(path)!r} has no frames")

    def energy(track: np.ndarray) -> float:
        valid = track[np.abs(track).sum(axis=(1, 2)) > 0]
        return float(valid.std(axis=0).sum()) if len(valid) > 1 else 0.0

    ranked = sorted(bodies.values(), key=energy, reverse=True)[:num_persons]
    out = np.zeros((3, num_frames, 25, num_persons), np.float32)
    for m, track in enumerate(ranked):
        out[..., m] = track.transpose(2, 0, 1)
    return out


def write_ntu_skeleton(path: str | os.PathLike, x: np.ndarray) -> None:
    """Write `(3, T, 25, M)` joints as an NTU `.skeleton` file (all-zero bodies are omitted).

    Fields other than x, y, z are filled with plausible constants (tracked joints, no lean).
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 4 or x.shape[0] != 3 or x.shape[2] != 25:
        raise ValueError(f"x: expected shape (3, T, 25, M), got {x.shape}")
    out = [str(x.shape[1])]
    for t in range(x.shape[1]):
        present = [m for m in range(x.shape[3]) if np.any(x[:, t, :, m] != 0)]
        out.append(str(len(present)))
        for m in present:
            out.append(f"{72057594037931100 + m} 0 1 1 1 1 0 0.0 0.0 2")
            out.append("25")
            for v in range(25):
                px, py, pz = x[:, t, v, m]
                out.append(f"{px:.7g} {py:.7g} {pz:.7g} 0 0 0 0 0 0 0 0 2")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
