"""The NTU-25 graph: structure, partitions, and dense einsum vs jraph segment_sum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import skel_gcn_jax as sg
from testkit import assert_trees_close


def test_graph_is_a_tree_centred_on_joint_21():
    a = np.asarray(sg.physical_adjacency(self_loops=False))
    assert a.shape == (25, 25) and np.array_equal(a, a.T)
    assert a.sum() == 2 * 24 == 2 * len(sg.NTU_EDGES)
    hop = sg.hop_distance()
    assert np.isfinite(hop).all()
    assert sg.CENTER_JOINT == 20 and hop[20].max() == 6


def test_partitions_split_the_normalised_adjacency():
    parts = np.asarray(sg.spatial_partitions())
    assert parts.shape == (3, 25, 25)
    full = np.asarray(sg.normalize_adjacency(sg.physical_adjacency()))
    np.testing.assert_allclose(parts.sum(0), full, rtol=1e-6)
    np.testing.assert_allclose(np.diag(parts[0]), np.diag(full))  # self loops are "same hop"
    assert np.all((parts > 0).sum(0) <= 1)  # each edge in exactly one partition
    # centripetal and centrifugal are transposes of each other's pattern
    np.testing.assert_array_equal(parts[1] > 0, (parts[2] > 0).T)


def test_graphs_tuple_round_trips_to_dense():
    g = sg.ntu_graph()
    assert int(g.n_edge[0]) == 2 * 24 + 25
    dense = sg.graph_to_dense(g)
    assert_trees_close(dense, sg.normalize_adjacency(sg.physical_adjacency()), rtol=1e-6)


@given(arrays(np.float32, (2, 3, 25, 4), elements=st.floats(-10, 10, width=32)))
def test_dense_einsum_equals_segment_sum_message_passing(x):
    g = sg.ntu_graph()
    a = sg.graph_to_dense(g)
    dense = jax.jit(sg.graph_conv_dense)(jnp.asarray(x), a)
    ref = jax.jit(sg.graph_conv_segment_sum)(jnp.asarray(x), g)
    assert_trees_close(dense, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,axis", [("column", -2), ("row", -1)])
def test_normalisation_sums_to_one(mode, axis):
    a = sg.normalize_adjacency(sg.physical_adjacency(), mode=mode)
    np.testing.assert_allclose(np.asarray(a).sum(axis), 1.0, rtol=1e-6)
    sym = np.asarray(sg.normalize_adjacency(sg.physical_adjacency(), mode="symmetric"))
    np.testing.assert_allclose(sym, sym.T, rtol=1e-6)


def test_bad_normalisation_mode_is_named():
    with pytest.raises(ValueError, match="mode"):
        sg.normalize_adjacency(sg.physical_adjacency(), mode="sideways")
