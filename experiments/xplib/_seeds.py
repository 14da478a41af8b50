"""Seed handling: one integer in the config, independent keys derived from it."""

import statistics
from collections.abc import Sequence
from typing import Any

import jax


def seed_keys(seed: int, n: int) -> list[jax.Array]:
    """`n` independent PRNG keys derived from `seed` (one per repeat or per seed run)."""
    return list(jax.random.split(jax.random.key(seed), n))


def median_over(runs: Sequence[dict[str, Any]], key: str) -> float:
    """Median of `run[key]` over repeats: the statistic every comparison reports."""
    return float(statistics.median(float(r[key]) for r in runs))
