"""Ring buffers of edits that improved fitness: the training data of the two BERT models."""

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Bool, Int


class EditBuffer(NamedTuple):
    """Improving point mutations (masked parent, point, new token) and improving crossovers
    (parent, donor, both points). ``*_count`` counts every insertion; the newest
    ``min(count, capacity)`` rows are valid."""

    mut_tokens: Int[Array, "cap length"]
    mut_point: Int[Array, " cap"]
    mut_target: Int[Array, " cap"]
    mut_count: Int[Array, ""]
    xo_parent: Int[Array, "cap length"]
    xo_donor: Int[Array, "cap length"]
    xo_point: Int[Array, " cap"]
    xo_donor_point: Int[Array, " cap"]
    xo_count: Int[Array, ""]


def empty_buffer(capacity: int, length: int) -> EditBuffer:
    zi = jnp.zeros((capacity,), jnp.int32)
    zt = jnp.zeros((capacity, length), jnp.int32)
    return EditBuffer(zt, zi, zi, jnp.int32(0), zt, zt, zi, zi, jnp.int32(0))


def _insert(rows: tuple[Array, ...], count: Array, new: tuple[Array, ...], keep: Bool[Array, " n"]):
    cap = rows[0].shape[0]
    pos = count + jnp.cumsum(keep) - 1
    idx = jnp.where(keep, pos % cap, cap)  # cap = out of range = dropped
    out = tuple(r.at[idx].set(n, mode="drop") for r, n in zip(rows, new, strict=True))
    return out, count + jnp.sum(keep).astype(jnp.int32)


def record_mutations(
    buf: EditBuffer, masked: Array, point: Array, target: Array, keep: Array
) -> EditBuffer:
    (t, p, y), c = _insert(
        (buf.mut_tokens, buf.mut_point, buf.mut_target),
        buf.mut_count,
        (masked, point, target),
        keep,
    )
    return buf._replace(mut_tokens=t, mut_point=p, mut_target=y, mut_count=c)


def record_crossovers(
    buf: EditBuffer, parent: Array, donor: Array, point: Array, donor_point: Array, keep: Array
) -> EditBuffer:
    rows = (buf.xo_parent, buf.xo_donor, buf.xo_point, buf.xo_donor_point)
    (a, b, p, q), c = _insert(rows, buf.xo_count, (parent, donor, point, donor_point), keep)
    return buf._replace(xo_parent=a, xo_donor=b, xo_point=p, xo_donor_point=q, xo_count=c)


def merge_buffers(buffers: list[EditBuffer]) -> dict[str, Array]:
    """Valid rows of several buffers (host side) concatenated into training arrays."""
    import numpy as np

    out: dict[str, list] = {k: [] for k in EditBuffer._fields if not k.endswith("count")}
    for b in buffers:
        b = EditBuffer(*(np.asarray(x) for x in b))
        nm = min(int(b.mut_count), b.mut_point.shape[0])
        nx = min(int(b.xo_count), b.xo_point.shape[0])
        for k in out:
            n = nm if k.startswith("mut") else nx
            out[k].append(getattr(b, k)[:n])
    return {k: np.concatenate(v) for k, v in out.items()}
