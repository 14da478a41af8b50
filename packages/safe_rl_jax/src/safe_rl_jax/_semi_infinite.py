"""Semi-infinite constraints: J_c(pi, y) <= d(y) for every y in a box Y, and the search for
the worst-violated y (EPO, arXiv 2511.04147).

A semi-infinite task supplies a per-step cost `cost_at(prev, action, y)` and a threshold
`threshold(y)`. The violation map `v(y) = mean over episodes of sum_t c(s_t, a_t, y) - d(y)` is
estimated from one batch of recorded rollouts for any set of y in one compiled call;
`worst_violations` sweeps a grid and refines the best grid points by projected gradient
ascent in y (multi-start), all jitted and vectorised.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ._networks import sample_action
from ._types import Array, Float


class Box(NamedTuple):
    """The index set Y = [low, high] (a box in R^d)."""

    low: Float[Array, " index_dim"]
    high: Float[Array, " index_dim"]

    def grid(self, points_per_dim: int) -> Float[Array, "points index_dim"]:
        """A regular grid with `points_per_dim` points per axis, endpoints included."""
        axes = [
            jnp.linspace(lo, hi, points_per_dim) for lo, hi in zip(self.low, self.high, strict=True)
        ]
        mesh = jnp.meshgrid(*axes, indexing="ij")
        return jnp.stack([m.reshape(-1) for m in mesh], axis=-1)

    def sample(self, n: int, *, key) -> Float[Array, "n index_dim"]:
        u = jax.random.uniform(key, (n, self.low.shape[0]))
        return self.low[None] + (self.high - self.low)[None] * u

    def clip(self, y):
        return jnp.clip(
            y, jnp.broadcast_to(self.low, y.shape), jnp.broadcast_to(self.high, y.shape)
        )


def box(low, high) -> Box:
    """Build a `Box`, checking shapes and order on the host."""
    low = np.atleast_1d(np.asarray(low, np.float32))
    high = np.atleast_1d(np.asarray(high, np.float32))
    if low.shape != high.shape or low.ndim != 1:
        raise ValueError(f"low/high: expected equal 1-D shapes, got {low.shape} and {high.shape}")
    if not np.all(high > low):
        raise ValueError(f"high: expected every entry > low, got low={low}, high={high}")
    return Box(jnp.asarray(low), jnp.asarray(high))


class Trajectories(NamedTuple):
    """Recorded rollouts: the pre-step states and the (clipped) actions, [time, episodes, ...]."""

    states: object
    actions: Float[Array, "time episodes act"]
    valid: Float[Array, "time episodes"]


def record_rollouts(env, graphdef, params, *, key, num_episodes: int) -> Trajectories:
    """Roll out the stochastic policy and keep what `cost_at` needs."""
    model = nnx.merge(graphdef, params)
    k0, k1 = jax.random.split(key)
    st = jax.vmap(env.reset)(jax.random.split(k0, num_episodes))

    def one(carry, k):
        s, alive = carry
        mean, log_std = model.dist(s.obs)
        a = jnp.clip(sample_action(mean, log_std, key=k), -1.0, 1.0)
        nxt = jax.vmap(env.step)(s, a)
        return (nxt, alive & ~nxt.done), (s, a, alive.astype(jnp.float32))

    _, (states, actions, valid) = jax.lax.scan(
        one, (st, jnp.ones((num_episodes,), bool)), jax.random.split(k1, env.episode_length)
    )
    return Trajectories(states, actions, valid)


def violation_fn(
    env, traj: Trajectories
) -> Callable[[Float[Array, " index_dim"]], Float[Array, ""]]:
    """v(y) = E_episodes[sum_t c(s_t, a_t, y)] - d(y) from recorded rollouts (differentiable)."""

    def v(y):
        c = jax.vmap(jax.vmap(lambda s, a: env.cost_at(s, a, y)))(traj.states, traj.actions)
        return jnp.mean(jnp.sum(c * traj.valid, axis=0)) - env.threshold(y)

    return v


def violation_map(
    env, traj: Trajectories, ys: Float[Array, "points index_dim"]
) -> Float[Array, " points"]:
    """The violation at every row of `ys` (one vectorised call)."""
    return jax.vmap(violation_fn(env, traj))(ys)


def worst_violations(
    v: Callable,
    index_set: Box,
    *,
    grid_points: int,
    num_starts: int,
    steps: int,
    step_size: float,
    separation: float = 0.0,
) -> tuple[Float[Array, "starts index_dim"], Float[Array, " starts"]]:
    """Grid sweep, then projected gradient ascent in y from the `num_starts` worst grid points.

    Starts are picked greedily with non-maximum suppression: each next start is the worst grid
    point farther than `separation` from the previous starts (0 gives the plain top-k), so the
    starts cover separate peaks of the violation map. Returns the refined points and their
    violations, sorted from most to least violated.
    """
    grid = index_set.grid(grid_points)
    vals = jax.vmap(v)(grid)
    picked, masked_vals = [], vals
    for _ in range(num_starts):
        i = jnp.argmax(masked_vals)
        picked.append(i)
        far = jnp.linalg.norm(grid - grid[i][None], axis=-1) > separation
        masked_vals = jnp.where(far, masked_vals, -jnp.inf).at[i].set(-jnp.inf)
    top = jnp.stack(picked)
    ys = grid[top]
    width = index_set.high - index_set.low
    grad = jax.vmap(jax.grad(v))

    def ascend(y, _):
        g = grad(y)
        g = g / (jnp.linalg.norm(g, axis=-1, keepdims=True) + 1e-12)
        return index_set.clip(y + step_size * width[None] * g), None

    ys, _ = jax.lax.scan(ascend, ys, None, length=steps)
    refined = jax.vmap(v)(ys)
    # Keep whichever is larger: the refined point or its grid start (ascent is a local search).
    better = refined >= vals[top]
    ys = jnp.where(better[:, None], ys, grid[top])
    out = jnp.where(better, refined, vals[top])
    order = jnp.argsort(-out)
    return ys[order], out[order]
