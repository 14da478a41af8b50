"""The alpha-beta model: ring formulas, cluster constants, stats -> seconds."""

import jax.numpy as jnp
import pytest
from hypothesis import given
from hypothesis import strategies as st

import grad_compress as gc


def test_ring_formulas_by_hand():
    net = gc.Network("toy", 1e-3, 1e6)
    # 4 workers, 1 MB: all-reduce 2*3 steps of alpha + 2*3/4 MB / (1 MB/s)
    assert gc.allreduce_time(1e6, 4, net) == pytest.approx(6e-3 + 1.5)
    assert gc.allgather_time(1e6, 4, net) == pytest.approx(3e-3 + 3.0)
    assert gc.p2p_time(1e6, net) == pytest.approx(1e-3 + 1.0)
    assert gc.allreduce_time(1e6, 1, net) == 0.0


@given(nbytes=st.floats(1.0, 1e9), workers=st.integers(2, 512))
def test_allreduce_bandwidth_term_is_bounded_by_twice_the_message(nbytes, workers):
    net = gc.H100_CLUSTER
    t = gc.allreduce_time(nbytes, workers, net) - 2 * (workers - 1) * net.latency_s
    assert nbytes / net.bandwidth_bytes_per_s <= t * (1 + 1e-9) + 1e-12
    assert t <= 2 * nbytes / net.bandwidth_bytes_per_s


def test_comm_time_from_stats_and_cluster_constants():
    stats = gc.CommStats(*(jnp.float32(v) for v in (4e6, 2.0, 1e5, 1.0)))
    expected = gc.allreduce_time(4e6, 8, gc.V100_CLUSTER, messages=2) + gc.allgather_time(
        1e5, 8, gc.V100_CLUSTER
    )
    assert gc.comm_time(stats, 8, gc.V100_CLUSTER) == pytest.approx(expected, rel=1e-6)
    assert gc.V100_CLUSTER.bandwidth_bytes_per_s < gc.H100_CLUSTER.bandwidth_bytes_per_s
    assert gc.payload_nbytes({"a": jnp.zeros((3, 4)), "b": jnp.zeros((5,), jnp.int8)}) == 53


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="workers"):
        gc.allreduce_time(1.0, 0, gc.V100_CLUSTER)
    with pytest.raises(ValueError, match="net"):
        gc.allgather_time(1.0, 2, gc.Network("bad", 0.0, 0.0))
