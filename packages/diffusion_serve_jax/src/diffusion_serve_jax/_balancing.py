"""Mask-aware load balancing of edit requests across engines, with a cost model of compute and
cache loading."""

from collections.abc import Callable, Sequence

import numpy as np

from ._editing import token_mask
from ._models import DiT
from ._step_batching import EditRequest


def balance(
    arrivals: Sequence[tuple[float, EditRequest]],
    num_workers: int,
    *,
    policy: str,
    cost: Callable[[EditRequest], float],
) -> list[list[int]]:
    """Assign requests to workers at arrival: `"round_robin"`, or `"mask_aware"` (to the worker
    with the least estimated outstanding work by the cost model; ties rotate over workers so
    that idle workers share a light load instead of the first one taking all of it)."""
    if policy not in ("round_robin", "mask_aware"):
        raise ValueError(f"policy: expected 'round_robin' or 'mask_aware', got {policy!r}")
    if num_workers < 1:
        raise ValueError(f"num_workers: expected >= 1, got {num_workers}")
    out: list[list[int]] = [[] for _ in range(num_workers)]
    free_at = np.zeros(num_workers)
    for n, i in enumerate(sorted(range(len(arrivals)), key=lambda i: arrivals[i][0])):
        t, req = arrivals[i]
        if policy == "round_robin":
            w = n % num_workers
        else:
            backlog = np.maximum(free_at - t, 0.0)
            order = [(n + k) % num_workers for k in range(num_workers)]
            w = min(order, key=lambda x: backlog[x])  # first in rotation among the least
        free_at[w] = max(free_at[w], t) + cost(req)
        out[w].append(i)
    return out


def edit_cost(
    dit: DiT,
    *,
    compute_per_token: float,
    load_per_token: float,
    steps: int = 1,
    plan: Callable[[int], int] | None = None,
):
    """Cost model of a masked edit in seconds: per step and block, compute grows with the
    masked tokens (all tokens in the `plan`'s full blocks) and cache loading with the tokens
    loaded for the cached blocks; the pipeline hides the smaller of the two, so a step costs
    the larger, and an edit `steps` of them."""
    n, depth = dit.num_tokens, len(dit.blocks)

    def cost(req: EditRequest) -> float:
        m = int(token_mask(dit, req.mask).sum())
        fb = 0 if plan is None else int(plan(m))
        compute = compute_per_token * (fb * n + (depth - fb) * m)
        load = load_per_token * n * (depth - fb)
        return steps * max(compute, load)

    return cost
