"""The alpha-beta communication model: time = messages x latency + bytes / bandwidth.

Ring algorithms over N workers (Thakur et al. 2005; Patarasuk & Yuan 2009):
- all-reduce of B bytes: 2 (N - 1) steps, each moving B / N bytes:
  T = 2 (N - 1) alpha + 2 (N - 1) / N * B / beta;
- all-gather of B bytes per worker: N - 1 steps of B bytes: T = (N - 1) alpha + (N - 1) B / beta;
- point-to-point (pipeline activations): T = alpha + B / beta.

Cluster parameters. The paper names the GPUs (32 V100, 64 H100) but not the interconnect, so
these are typical published figures for such clusters, stated as assumptions:
- `V100_CLUSTER`: DGX-1-class nodes with one 100 Gb/s EDR InfiniBand link per GPU
  (12.5 GB/s) and ~10 us per-message latency (NCCL ring across nodes);
- `H100_CLUSTER`: DGX-H100-class nodes with one 400 Gb/s NDR InfiniBand link per GPU
  (50 GB/s) and ~5 us per-message latency.
The data-parallel gradient all-reduce crosses nodes, so the inter-node link is the bottleneck.
"""

from typing import NamedTuple

from ._stats import CommStats


class Network(NamedTuple):
    name: str
    latency_s: float  # alpha: seconds per message step
    bandwidth_bytes_per_s: float  # beta: bytes per second per link


V100_CLUSTER = Network("V100 cluster, 100 Gb/s EDR InfiniBand", 10e-6, 12.5e9)
H100_CLUSTER = Network("H100 cluster, 400 Gb/s NDR InfiniBand", 5e-6, 50e9)


def _check(workers: int, net: Network) -> None:
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected a positive int, got {workers!r}")
    if net.latency_s < 0 or net.bandwidth_bytes_per_s <= 0:
        raise ValueError(f"net: expected latency >= 0 and bandwidth > 0, got {net}")


def allreduce_time(nbytes: float, workers: int, net: Network, *, messages: float = 1) -> float:
    """Ring all-reduce of `nbytes` in total split over `messages` collectives."""
    _check(workers, net)
    n = workers
    if n == 1:
        return 0.0
    return (
        messages * 2 * (n - 1) * net.latency_s
        + 2 * (n - 1) / n * nbytes / net.bandwidth_bytes_per_s
    )


def allgather_time(nbytes: float, workers: int, net: Network, *, messages: float = 1) -> float:
    """Ring all-gather where each worker contributes `nbytes` (summed over `messages`)."""
    _check(workers, net)
    n = workers
    if n == 1:
        return 0.0
    return messages * (n - 1) * net.latency_s + (n - 1) * nbytes / net.bandwidth_bytes_per_s


def p2p_time(nbytes: float, net: Network, *, messages: float = 1) -> float:
    """Point-to-point sends (pipeline-stage activations / gradients)."""
    _check(1, net)
    return messages * net.latency_s + nbytes / net.bandwidth_bytes_per_s


def comm_time(stats: CommStats, workers: int, net: Network) -> float:
    """Modelled seconds of one step's collectives from a compressor's exact `CommStats`."""
    return allreduce_time(
        float(stats.allreduce_bytes), workers, net, messages=float(stats.allreduce_messages)
    ) + allgather_time(
        float(stats.allgather_bytes), workers, net, messages=float(stats.allgather_messages)
    )
