"""Which tensors to compress, and how a tensor is viewed as a matrix.

PowerSGD's rule (torch DDP hook): vectors (biases, norms) are sent uncompressed, and a matrix is
compressed only if its rank-r factors are smaller than the matrix itself, (n + m) r < n m. Tiny
matrices are also skipped (`min_numel`) because the message latency dominates their cost.
"""

import math
from collections.abc import Callable

Policy = Callable[[tuple[int, ...]], bool]


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """View an N-d tensor (N >= 2) as a matrix: first axis x product of the others."""
    if len(shape) < 2:
        raise ValueError(f"shape: expected at least 2 dimensions for a matrix view, got {shape}")
    return int(shape[0]), int(math.prod(shape[1:]))


def low_rank_policy(rank: int, *, min_numel: int = 1024) -> Policy:
    """PowerSGD's per-tensor rule for rank `rank` (compress iff worth it)."""
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank: expected a positive int, got {rank!r}")

    def policy(shape: tuple[int, ...]) -> bool:
        if len(shape) < 2 or math.prod(shape) < min_numel:
            return False
        n, m = matrix_shape(shape)
        return (n + m) * rank < n * m

    return policy


def size_policy(*, min_numel: int = 1024) -> Policy:
    """Element-wise compressors: compress every matrix with at least `min_numel` entries."""

    def policy(shape: tuple[int, ...]) -> bool:
        return len(shape) >= 2 and math.prod(shape) >= min_numel

    return policy
