"""Ring buffers of recorded edits: the training data of the two BERT models.

By default only the edits that improved fitness are kept (``GPConfig(record="improving")``);
``record="all"`` keeps every edit whose child has a finite fitness, with its gain, so that the
models can be trained on all of them weighted by how much they helped (`edit_weights`).
"""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ._types import HostOrDevice


class EditBuffer(NamedTuple):
    """Recorded point mutations (masked parent, point, new token) and crossovers (parent,
    donor, both points), each with its gain (parent fitness minus child fitness: > 0 means
    the edit improved). ``*_count`` counts every insertion; the newest
    ``min(count, capacity)`` rows are valid. Fields are jax arrays inside the engine and numpy
    arrays once brought to the host (`jax.tree.map(np.asarray, buffer)`)."""

    mut_tokens: Int[HostOrDevice, "cap length"]
    mut_point: Int[HostOrDevice, " cap"]
    mut_target: Int[HostOrDevice, " cap"]
    mut_gain: Float[HostOrDevice, " cap"]
    mut_count: Int[HostOrDevice, ""] | np.integer
    xo_parent: Int[HostOrDevice, "cap length"]
    xo_donor: Int[HostOrDevice, "cap length"]
    xo_point: Int[HostOrDevice, " cap"]
    xo_donor_point: Int[HostOrDevice, " cap"]
    xo_gain: Float[HostOrDevice, " cap"]
    xo_count: Int[HostOrDevice, ""] | np.integer


def empty_buffer(capacity: int, length: int) -> EditBuffer:
    zi = jnp.zeros((capacity,), jnp.int32)
    zf = jnp.zeros((capacity,), jnp.float32)
    zt = jnp.zeros((capacity, length), jnp.int32)
    return EditBuffer(zt, zi, zi, zf, jnp.int32(0), zt, zt, zi, zi, zf, jnp.int32(0))


def _insert(rows: tuple[Array, ...], count: Array, new: tuple[Array, ...], keep: Bool[Array, " n"]):
    cap = rows[0].shape[0]
    pos = count + jnp.cumsum(keep) - 1
    idx = jnp.where(keep, pos % cap, cap)  # cap = out of range = dropped
    out = tuple(r.at[idx].set(n, mode="drop") for r, n in zip(rows, new, strict=True))
    return out, count + jnp.sum(keep).astype(jnp.int32)


def record_mutations(
    buf: EditBuffer, masked: Array, point: Array, target: Array, gain: Array, keep: Array
) -> EditBuffer:
    (t, p, y, g), c = _insert(
        (buf.mut_tokens, buf.mut_point, buf.mut_target, buf.mut_gain),
        buf.mut_count,
        (masked, point, target, gain),
        keep,
    )
    return buf._replace(mut_tokens=t, mut_point=p, mut_target=y, mut_gain=g, mut_count=c)


def record_crossovers(
    buf: EditBuffer,
    parent: Array,
    donor: Array,
    point: Array,
    donor_point: Array,
    gain: Array,
    keep: Array,
) -> EditBuffer:
    rows = (buf.xo_parent, buf.xo_donor, buf.xo_point, buf.xo_donor_point, buf.xo_gain)
    new = (parent, donor, point, donor_point, gain)
    (a, b, p, q, g), c = _insert(rows, buf.xo_count, new, keep)
    return buf._replace(
        xo_parent=a, xo_donor=b, xo_point=p, xo_donor_point=q, xo_gain=g, xo_count=c
    )


def edit_weights(gain, sharpness: float = 3.0) -> np.ndarray:
    """Training weights from the gains of recorded edits (host side): ``exp(sharpness * (q -
    1))`` with ``q`` the edit's rank percentile in [0, 1] (1 = largest gain, ties share their
    mean rank), normalised to mean 1. Rank-based so that a few huge gains (an expression
    leaving a non-finite region) do not dominate; every edit keeps a positive weight, the best
    ones ``exp(sharpness)`` times the worst. ``sharpness = 0`` weights all edits equally."""
    gain = np.asarray(gain, np.float64)
    if gain.ndim != 1 or gain.size == 0:
        raise ValueError(f"gain: expected a non-empty 1-D array, got shape {gain.shape}")
    if not sharpness >= 0:
        raise ValueError(f"sharpness: expected >= 0, got {sharpness}")
    order = np.argsort(gain, kind="stable")
    ranks = np.empty(gain.size)
    ranks[order] = np.arange(gain.size)
    _, inverse = np.unique(gain, return_inverse=True)  # ties: mean rank
    ranks = (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]
    q = ranks / max(gain.size - 1, 1)
    w = np.exp(sharpness * (q - 1.0))
    return (w / w.mean()).astype(np.float32)


def merge_buffers(buffers: list[EditBuffer]) -> dict[str, np.ndarray]:
    """Valid rows of several buffers (host side) concatenated into training arrays."""
    out: dict[str, list] = {k: [] for k in EditBuffer._fields if not k.endswith("count")}
    for buf in buffers:
        b = {k: np.asarray(v) for k, v in buf._asdict().items()}
        nm = min(int(b["mut_count"]), b["mut_point"].shape[0])
        nx = min(int(b["xo_count"]), b["xo_point"].shape[0])
        for k in out:
            out[k].append(b[k][: nm if k.startswith("mut") else nx])
    return {k: np.concatenate(v) for k, v in out.items()}
