"""The EPO loop (exchange policy optimization) and its baselines in one compiled iteration.

Each outer iteration: (1) record rollouts of the current policy and search the worst-violated
indices (grid + multi-start gradient ascent); (2) constraint expansion: every found y with
violation > eta enters the working set; (3) `inner_iterations` PPO-Lagrangian updates on the
working set (one multiplier per active slot, index-conditioned cost critic); (4) constraint
deletion: active slots whose multiplier is zero are dropped.

Baselines share the same learner and capacity (`mode`, data in the state so all modes vmap in
one program): `FIXED_GRID` keeps a fixed regular grid of at most `capacity` constraints
(discretisation; `fixed_grid`), `RANDOM` re-samples `capacity` random indices every outer
iteration (SI-CPO-style). The penalty method is `FIXED_GRID` with the `penalty` controller.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._exchange import WorkingSet, add_violated, drop_inactive
from ._learner import PPOConfig, TrainState, make_trainer
from ._semi_infinite import record_rollouts, violation_fn, worst_violations
from ._spray import spray_cost_fn as indexed_cost_fn
from ._types import Array, Bool, Float

EPO, FIXED_GRID, RANDOM = 0, 1, 2


class EPOConfig(NamedTuple):
    capacity: int = 8
    eta: float = 0.05
    grid_points: int = 32
    num_starts: int = 4
    ascent_steps: int = 10
    ascent_step_size: float = 0.01
    inner_iterations: int = 5
    check_episodes: int = 16
    min_distance: float = 0.02
    separation: float = 0.1


class EPOState(NamedTuple):
    train: TrainState
    mode: Any  # int32: EPO, FIXED_GRID or RANDOM
    key: Any


def fixed_grid(
    index_set, capacity: int
) -> tuple[Float[Array, "capacity d"], Bool[Array, " capacity"]]:
    """The densest regular grid over the box with at most `capacity` points, padded to capacity.

    `n = floor(capacity ** (1 / d))` points per axis (endpoints included); unused slots are
    masked off (they repeat the first grid point).
    """
    d = index_set.low.shape[0]
    n = int(np.floor(capacity ** (1.0 / d) + 1e-9))
    if n < 2:
        raise ValueError(f"capacity: expected >= 2**index_dim = {2**d} for a grid, got {capacity}")
    grid = index_set.grid(n)
    used = grid.shape[0]
    pad = jnp.broadcast_to(grid[:1], (capacity - used, d))
    mask = jnp.arange(capacity) < used
    return jnp.concatenate([grid, pad], 0), mask


def make_epo(
    env,
    controller,
    ppo: PPOConfig | None = None,
    cfg: EPOConfig | None = None,
    *,
    mesh: jax.sharding.Mesh | None = None,
):
    """Returns `(init(key, mode), iteration(state) -> (state, metrics), trainer)`.

    With `mesh` (Auto axis types), the inner PPO-Lagrangian updates shard the environment axis
    over the mesh's first axis, as `make_trainer(mesh=...)`; the worst-violation search (its
    `check_episodes` rollouts, under 1% of an iteration) runs replicated.
    """
    ppo = PPOConfig() if ppo is None else ppo
    cfg = EPOConfig() if cfg is None else cfg
    if cfg.eta < 0:
        raise ValueError(f"cfg.eta: expected >= 0, got {cfg.eta}")
    if cfg.num_starts > cfg.grid_points**env.index_dim:
        raise ValueError(f"cfg.num_starts: expected <= number of grid points, got {cfg.num_starts}")
    trainer = make_trainer(
        env,
        controller,
        ppo,
        num_costs=cfg.capacity,
        index_dim=env.index_dim,
        cost_fn=indexed_cost_fn(env),
        mesh=mesh,
    )
    Y = env.index_set
    fixed, grid_mask = fixed_grid(Y, cfg.capacity)
    thresholds = jax.vmap(env.threshold)

    def init(key, mode):
        k1, k2 = jax.random.split(key)
        mode = jnp.asarray(mode, jnp.int32)
        mask = jnp.where(
            mode == EPO,
            jnp.zeros((cfg.capacity,), bool),
            jnp.where(mode == FIXED_GRID, grid_mask, jnp.ones((cfg.capacity,), bool)),
        )
        st = trainer.init(k1, thresholds(fixed), mask=mask, index=fixed)
        return EPOState(st, mode, jax.random.key_data(k2))

    def iteration(state: EPOState):
        key = jax.random.wrap_key_data(state.key)
        key, k_roll, k_rand = jax.random.split(key, 3)
        st = state.train
        traj = record_rollouts(
            env, trainer.graphdef, st.params, key=k_roll, num_episodes=cfg.check_episodes
        )
        v = violation_fn(env, traj)
        ys, vals = worst_violations(
            v,
            Y,
            grid_points=cfg.grid_points,
            num_starts=cfg.num_starts,
            steps=cfg.ascent_steps,
            separation=cfg.separation,
            step_size=cfg.ascent_step_size,
        )
        ws, added = add_violated(
            WorkingSet(st.index, st.mask), ys, vals, eta=cfg.eta, min_distance=cfg.min_distance
        )
        rand = Y.sample(cfg.capacity, key=k_rand)
        is_epo, is_rand = state.mode == EPO, state.mode == RANDOM
        index = jnp.where(is_epo, ws.index, jnp.where(is_rand, rand, st.index))
        mask = jnp.where(is_epo, ws.mask, st.mask)
        st = st._replace(index=index, mask=mask, limit=thresholds(index))
        st, m = trainer.run(st, cfg.inner_iterations)
        dropped = drop_inactive(WorkingSet(st.index, st.mask), st.lam).mask
        st = st._replace(mask=jnp.where(is_epo, dropped, st.mask))
        metrics = {
            "max_violation_found": vals[0],
            "worst_y": ys[0],
            "working_set_size": jnp.sum(mask),
            "added": jnp.sum(added & is_epo),
            "episode_return": m["episode_return"][-1],
        }
        return EPOState(st, state.mode, jax.random.key_data(key)), metrics

    return init, iteration, trainer
