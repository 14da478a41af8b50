"""Combinators: build one compressor from several, as optax's `partition` builds one transform.

    comp = gc.partition({"low_rank": gc.powersgd(4), "exact": gc.no_compression()}, label_fn)
    comp = gc.by_shape(gc.powersgd(4))  # matrices -> PowerSGD, vectors -> uncompressed

Each label's compressor sees the gradient pytree with every other label's leaves replaced by
`None` (so leaf paths, which `edgc`'s `stage_fn` reads, are unchanged), keeps its own state and
runs its own collectives; the `CommStats` of all labels are summed.
"""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax

from . import _stats
from ._base import Compressor, check_float_tree
from ._codecs import no_compression
from ._types import Key, PyTree

LabelFn = Callable[[tuple, tuple[int, ...]], str]


class PartitionState(NamedTuple):
    """One state per label (`None` for a label that got no leaves)."""

    inner: dict[str, Any]


def partition(compressors: Mapping[str, Compressor], label_fn: LabelFn) -> Compressor:
    """Route each leaf to the compressor of its label; `label_fn(path, shape) -> label`.

    `update(grads, state, *, key=None, axis_name=None)`: label i (in sorted label order) gets
    `jax.random.fold_in(key, i)`, so randomised compressors draw independently.
    """
    if not compressors:
        raise ValueError("compressors: expected at least one {label: Compressor}, got none")
    for name, comp in compressors.items():
        if not isinstance(comp, Compressor):
            raise TypeError(f"compressors[{name!r}]: expected a Compressor, got {type(comp)}")
    names = sorted(compressors)

    def _labels(tree: PyTree) -> list[str]:
        flat, _ = jax.tree_util.tree_flatten_with_path(tree)
        labels = [label_fn(path, tuple(x.shape)) for path, x in flat]
        unknown = sorted({lab for lab in labels if lab not in compressors})
        if unknown:
            raise ValueError(f"label_fn: returned labels {unknown}, expected one of {names}")
        return labels

    def _subtree(tree: PyTree, labels: list[str], name: str) -> PyTree | None:
        if name not in labels:
            return None
        leaves, treedef = jax.tree.flatten(tree)
        return treedef.unflatten(
            [x if lab == name else None for x, lab in zip(leaves, labels, strict=True)]
        )

    def init(params: PyTree) -> PartitionState:
        check_float_tree(params, "params")
        labels = _labels(params)
        inner = {}
        for name in names:
            sub = _subtree(params, labels, name)
            inner[name] = None if sub is None else compressors[name].init(sub)
        return PartitionState(inner)

    def update(grads: PyTree, state: PartitionState, *, key: Key | None = None, axis_name=None):
        labels = _labels(grads)
        leaves, treedef = jax.tree.flatten(grads)
        outs: list = list(leaves)
        inner, stats = {}, _stats.CommStats.zeros()
        for i, name in enumerate(names):
            sub = _subtree(grads, labels, name)
            if sub is None:
                inner[name] = state.inner[name]
                continue
            k = None if key is None else jax.random.fold_in(key, i)
            out, inner[name], s = compressors[name].update(
                sub, state.inner[name], key=k, axis_name=axis_name
            )
            slots = [j for j, lab in enumerate(labels) if lab == name]
            for j, x in zip(slots, jax.tree.leaves(out), strict=True):
                outs[j] = x
            stats = stats + s
        return treedef.unflatten(outs), PartitionState(inner), stats

    return Compressor(init, update)


def by_shape(
    matrices: Compressor,
    vectors: Compressor | None = None,
    *,
    is_matrix: Callable[[tuple[int, ...]], bool] | None = None,
) -> Compressor:
    """`partition` by shape: tensors with >= 2 dimensions go to `matrices`, the rest to `vectors`.

    `vectors` defaults to `no_compression()` (biases and norms sent exactly); `is_matrix(shape)`
    replaces the >= 2-dimensions rule.
    """
    vectors = vectors or no_compression()
    is_matrix = is_matrix or (lambda shape: len(shape) >= 2)
    return partition(
        {"matrix": matrices, "vector": vectors},
        lambda path, shape: "matrix" if is_matrix(shape) else "vector",
    )
