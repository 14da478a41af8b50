"""Compare whole pytrees with a tolerance and a message that names the leaf."""

from typing import Any

import jax
import numpy as np


def assert_trees_close(
    actual: Any, expected: Any, *, rtol: float = 1e-6, atol: float = 0.0
) -> None:
    """Assert two pytrees have the same structure and numerically close leaves.

    Leaves are compared with ``np.testing.assert_allclose`` (NaNs in the same places compare
    equal); the failure message names the leaf path so a mismatch deep in a model is findable.
    """
    a_leaves, a_def = jax.tree_util.tree_flatten_with_path(actual)
    e_leaves, e_def = jax.tree_util.tree_flatten_with_path(expected)
    if a_def != e_def:
        raise AssertionError(f"tree structures differ:\n  actual:   {a_def}\n  expected: {e_def}")
    for (path, a), (_, e) in zip(a_leaves, e_leaves, strict=True):
        name = jax.tree_util.keystr(path) or "<root>"
        a, e = np.asarray(a), np.asarray(e)
        if a.shape != e.shape:
            raise AssertionError(f"leaf {name}: shape {a.shape} != expected {e.shape}")
        if a.dtype != e.dtype:
            raise AssertionError(f"leaf {name}: dtype {a.dtype} != expected {e.dtype}")
        if np.issubdtype(a.dtype, np.inexact):
            np.testing.assert_allclose(
                a.astype(np.float64),
                e.astype(np.float64),
                rtol=rtol,
                atol=atol,
                err_msg=f"leaf {name}",
            )
        else:
            np.testing.assert_array_equal(a, e, err_msg=f"leaf {name}")
