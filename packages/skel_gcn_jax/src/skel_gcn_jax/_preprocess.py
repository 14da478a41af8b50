"""Preprocessing of `(..., 3, T, V, M)` skeletons: centring, frame sampling and the four
input streams (joint, bone, joint motion, bone motion) that multi-stream GCNs fuse.

Missing joints are exact zeros (NTU's convention, also used by the generator's dropout); centring
keeps them zero so that a network can still tell them apart.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ._graph import CENTER_JOINT, NTU_EDGES
from ._types import SampledSkeleton, Skeleton

# Bone parents for the bone stream: bone[v] = x[v] - x[parent[v]]; the centre joint has none.
_BONE_PARENT = np.arange(25)
for _a, _b in NTU_EDGES:
    _BONE_PARENT[_a] = _b
_BONE_PARENT[CENTER_JOINT] = CENTER_JOINT
BONE_PARENT = _BONE_PARENT


def _check(x: jax.Array | np.ndarray, name: str = "x") -> None:
    if x.ndim < 4 or x.shape[-4] != 3 or x.shape[-2] != 25:
        raise ValueError(f"{name}: expected shape (..., 3, T, 25, M), got {x.shape}")


def valid_mask(x: Skeleton) -> jax.Array:
    """`(..., 1, T, V, M)` float mask: 1 where a joint was observed (not all-zero)."""
    return jnp.any(x != 0, axis=-4, keepdims=True).astype(x.dtype)


def centre_skeleton(x: Skeleton, *, joint: int = 1) -> Skeleton:
    """Subtract the position of `joint` (default spine middle) in the first frame of person 0.

    The origin is taken from the first frame where that joint is observed; missing entries stay 0.
    """
    _check(x)
    mask = valid_mask(x)
    ref = x[..., :, :, joint, 0]  # (..., 3, T)
    seen = mask[..., 0, :, joint, 0] > 0  # (..., T)
    first = jnp.argmax(seen, axis=-1)
    origin = jnp.take_along_axis(ref, first[..., None, None], axis=-1)  # (..., 3, 1)
    return (x - origin[..., None, None]) * mask


def sample_frames(x: Skeleton, num_frames: int, *, key: jax.Array | None = None) -> SampledSkeleton:
    """Resample T frames to `num_frames` by uniform segments (random offset inside each segment
    when `key` is given, the segment centre otherwise)."""
    _check(x)
    if num_frames < 1:
        raise ValueError(f"num_frames: expected >= 1, got {num_frames}")
    t = x.shape[-3]
    edges = jnp.linspace(0.0, t, num_frames + 1)
    width = edges[1:] - edges[:-1]
    u = 0.5 if key is None else jax.random.uniform(key, (num_frames,))
    idx = jnp.clip(jnp.floor(edges[:-1] + u * width).astype(jnp.int32), 0, t - 1)
    return jnp.take(x, idx, axis=-3)


def bone_stream(x: Skeleton) -> Skeleton:
    """Bone vectors `x[v] - x[parent(v)]` (0 at the centre joint or where an end is missing)."""
    _check(x)
    mask = valid_mask(x)
    both = mask * jnp.take(mask, BONE_PARENT, axis=-2)
    return (x - jnp.take(x, BONE_PARENT, axis=-2)) * both


def motion_stream(x: Skeleton) -> Skeleton:
    """Frame differences `x[t + 1] - x[t]`, zero on the last frame and where a joint is missing."""
    _check(x)
    mask = valid_mask(x)
    diff = (x[..., 1:, :, :] - x[..., :-1, :, :]) * mask[..., 1:, :, :] * mask[..., :-1, :, :]
    pad = jnp.zeros_like(x[..., :1, :, :])
    return jnp.concatenate([diff, pad], axis=-3)


def make_streams(x: Skeleton) -> dict[str, Skeleton]:
    """The four PYSKL/CTR-GCN streams: joint, bone, joint_motion, bone_motion."""
    bone = bone_stream(x)
    return {
        "joint": x,
        "bone": bone,
        "joint_motion": motion_stream(x),
        "bone_motion": motion_stream(bone),
    }
