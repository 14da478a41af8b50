"""PPO-Lagrangian learner compiled end to end: rollout, GAE, multiplier update, PPO epochs.

`make_trainer(env, controller, config)` returns pure functions. `init(key, limit)` builds a
`TrainState`; `step(state)` runs one policy iteration; `run(state, n)` scans `n` iterations
with `lax.scan`. All three are jittable and `vmap` over seeds and cost limits (the limit, the
constraint mask and the constraint index live in the state, not in the closure).
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ._controllers import ConstraintSignal, MultiplierController
from ._env import EnvState, check_environment
from ._gae import gae
from ._networks import Agent, gaussian_entropy, gaussian_log_prob, sample_action
from ._surrogate import policy_features, surrogate_products, surrogate_products_reference
from ._types import Array, Costs, Float, Mask


class PPOConfig(NamedTuple):
    """PPO-Lagrangian hyperparameters (static: they live in the closure, not the state)."""

    num_envs: int = 64
    num_epochs: int = 4
    num_minibatches: int = 4
    learning_rate: float = 3e-4
    discount: float = 0.99
    cost_discount: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    entropy_coef: float = 0.0
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: Sequence[int] = (64, 64)
    # > 0: the learning rate decays linearly to `final_lr_fraction * learning_rate` over this
    # many policy iterations (then stays there); 0 keeps it constant.
    decay_iterations: int = 0
    final_lr_fraction: float = 0.1
    # "per_cost": standardise each cost channel's advantages (OmniSafe); "shared": centre each
    # channel but divide all by one pooled std, keeping the channels' relative scales (many
    # correlated constraints, EPO: a barely-touched constraint is not blown up to unit scale).
    cost_advantage_scale: str = "per_cost"
    # True: one critic MLP with a reward head and one head per cost channel (half the critic
    # compute of separate reward and cost MLPs); needs unindexed costs (index_dim=0).
    shared_critic: bool = False
    # The cost critic's hidden sizes (separate critics only); None: the same as `hidden`.
    cost_hidden: Sequence[int] | None = None
    # Minibatches of whole per-env unrolls, "envs" (the default, as brax's PPO: a permutation of
    # num_envs items, cheap on CPU, where XLA's sort is slow; num_minibatches must divide
    # num_envs), or of all num_envs * episode_length single "transitions" (OmniSafe's layout).
    shuffle: str = "envs"
    # True (default): the rollout's unrolled loop holds only the policy and the env (as brax's),
    # the critic runs once on all T + 1 observations after it, and the reward and cost GAE run
    # as one scan (when discount == cost_discount). False: the critic runs inside the loop, one
    # step at a time. Same random stream and estimator, up to float rounding of the matmuls.
    batched_values: bool = True
    # PLO's gradient signal (g_c·g_r, g_c·g_cᵀ): "manual", a hand-written backward pass of the
    # policy that propagates the per-sample signal once for all surrogates and reuses the
    # rollout's hidden activations, or "jacrev", one `jax.jacrev` of the surrogates (the
    # reference). Equal up to float rounding.
    surrogate_gradients: str = "manual"
    # Which transitions estimate PLO's gradient products: "full", the whole batch, or
    # "minibatch", the unrolls of the first num_envs // num_minibatches environments (one PPO
    # minibatch's worth of whole unrolls; the environments are i.i.d., so this is a random
    # subset of the batch), cross-fitted between the subset's two halves of environments
    # (unbiased products, `surrogate_products(split=True)`): a quarter of the products' cost
    # at the default 4 minibatches. "half": the first num_envs // 2 environments, cross-fitted
    # the same way (half the cost). "minibatch_same": the minibatch subset, products of
    # gradients from the same sample (biased upward by the noise; kept for comparison).
    surrogate_batch: str = "full"
    # PLO's gradient products are recomputed every `products_every` policy iterations of a
    # `run` call (its first iteration included) and reused, stale, in between; the multiplier
    # update still runs every iteration on the freshly measured cost. 1 (default): every
    # iteration. The skip is a `lax.cond` on the scan's loop counter, so it stays a real
    # branch under `vmap` (the pass is not run on skipped iterations). `step` always recomputes.
    products_every: int = 1


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    ctrl_state: Any
    lam: Costs
    limit: Costs
    mask: Mask
    index: Float[Array, "costs index_dim"]
    key: Any  # raw uint32 key data, so checkpoints hold plain arrays
    iteration: Any


class Trainer(NamedTuple):
    init: Callable[..., TrainState]
    step: Callable[[TrainState], tuple[TrainState, dict]]
    run: Callable[[TrainState, int], tuple[TrainState, dict]]
    graphdef: Any
    num_costs: int


class Rollout(NamedTuple):
    obs: Array
    action: Array
    log_prob: Array
    reward: Array
    cost: Array
    value: Array
    cost_value: Array
    valid: Array
    termination: Array
    features: Any = None  # the policy's hidden activations (controllers that use gradients)


def _check_config(config: PPOConfig, env) -> None:
    for name in ("num_envs", "num_epochs", "num_minibatches", "products_every"):
        v = getattr(config, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"config.{name}: expected a positive int, got {v!r}")
    n = config.num_envs * env.episode_length
    if n % config.num_minibatches:
        raise ValueError(
            f"config.num_minibatches: must divide num_envs * episode_length = {n}, "
            f"got {config.num_minibatches}"
        )
    for name in ("discount", "cost_discount", "gae_lambda"):
        v = getattr(config, name)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"config.{name}: expected in [0, 1], got {v}")
    if config.decay_iterations < 0 or not 0.0 < config.final_lr_fraction <= 1.0:
        raise ValueError(
            "config.decay_iterations/final_lr_fraction: expected >= 0 and in (0, 1], got "
            f"{config.decay_iterations} and {config.final_lr_fraction}"
        )
    if config.cost_advantage_scale not in ("per_cost", "shared"):
        raise ValueError(
            "config.cost_advantage_scale: expected 'per_cost' or 'shared', "
            f"got {config.cost_advantage_scale!r}"
        )
    if config.shuffle not in ("transitions", "envs"):
        raise ValueError(
            f"config.shuffle: expected 'transitions' or 'envs', got {config.shuffle!r}"
        )
    if config.shuffle == "envs" and config.num_envs % config.num_minibatches:
        raise ValueError(
            "config.num_minibatches: with shuffle='envs' it must divide num_envs = "
            f"{config.num_envs}, got {config.num_minibatches}"
        )
    if config.surrogate_gradients not in ("manual", "jacrev"):
        raise ValueError(
            "config.surrogate_gradients: expected 'manual' or 'jacrev', "
            f"got {config.surrogate_gradients!r}"
        )
    if config.surrogate_batch not in ("full", "half", "minibatch", "minibatch_same"):
        raise ValueError(
            "config.surrogate_batch: expected 'full', 'half', 'minibatch' or 'minibatch_same', "
            f"got {config.surrogate_batch!r}"
        )
    if config.surrogate_batch == "minibatch_same" and config.num_envs < config.num_minibatches:
        raise ValueError(
            "config.surrogate_batch: 'minibatch_same' needs num_envs >= num_minibatches (at "
            f"least one environment per minibatch), got {config.num_envs} and "
            f"{config.num_minibatches}"
        )
    per = config.num_envs // config.num_minibatches
    if config.surrogate_batch == "minibatch" and (per < 2 or per % 2):
        raise ValueError(
            "config.surrogate_batch: 'minibatch' cross-fits two halves of the first "
            "num_envs // num_minibatches environments, which must be even and >= 2, got "
            f"{config.num_envs} // {config.num_minibatches} = {per}"
        )
    if config.surrogate_batch == "half" and config.num_envs % 4:
        raise ValueError(
            "config.surrogate_batch: 'half' cross-fits two halves of the first num_envs // 2 "
            f"environments, so num_envs must be a multiple of 4, got {config.num_envs}"
        )
    if config.cost_hidden is not None and (
        not all(isinstance(h, int) and h > 0 for h in config.cost_hidden)
    ):
        raise ValueError(
            f"config.cost_hidden: expected None or positive ints, got {config.cost_hidden!r}"
        )
    if config.learning_rate <= 0:
        raise ValueError(f"config.learning_rate: expected > 0, got {config.learning_rate}")


def make_trainer(
    env,
    controller: MultiplierController,
    config: PPOConfig | None = None,
    *,
    num_costs: int | None = None,
    index_dim: int = 0,
    cost_fn: Callable[[EnvState, Array, EnvState, Array], Costs] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> Trainer:
    """Build the compiled PPO-Lagrangian learner for `env` with a multiplier `controller`.

    `num_costs` constraint slots (default `env.num_costs`); with `cost_fn(prev, action, next,
    index) -> [num_costs]` the per-step costs are computed from the transition and the slot
    indices (semi-infinite constraints, EPO) instead of read from `next.cost`. With `mesh`, the
    environment axis is sharded over the mesh's first axis.
    """
    config = PPOConfig() if config is None else config
    check_environment(env)
    _check_config(config, env)
    if not isinstance(controller, MultiplierController):
        raise TypeError(f"controller: expected a MultiplierController, got {type(controller)}")
    if mesh is not None and any(t != jax.sharding.AxisType.Auto for t in mesh.axis_types):
        raise ValueError(
            "mesh: expected Auto axis types (jax.make_mesh(..., axis_types=(AxisType.Auto,))), "
            f"got {mesh.axis_types}"
        )
    k = env.num_costs if num_costs is None else int(num_costs)
    if cost_fn is None and k != env.num_costs:
        raise ValueError(
            f"num_costs: without cost_fn it must equal env.num_costs={env.num_costs}, got {k}"
        )
    agent = Agent(
        env.observation_size,
        env.action_size,
        k,
        index_dim=index_dim,
        hidden=config.hidden,
        shared_critic=config.shared_critic,
        cost_hidden=config.cost_hidden,
        rngs=nnx.Rngs(0),
    )
    graphdef, _ = nnx.split(agent)

    # Separate clipping for actor and critics (as OmniSafe): value-loss gradients, whose scale
    # follows the returns, must not shrink the policy step through a shared global-norm clip.
    updates_per_iteration = config.num_epochs * config.num_minibatches
    lr = (
        optax.linear_schedule(
            config.learning_rate,
            config.learning_rate * config.final_lr_fraction,
            config.decay_iterations * updates_per_iteration,
        )
        if config.decay_iterations > 0
        else config.learning_rate
    )

    def opt():
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr))

    def labels(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "actor" if str(path[0].key) in ("policy", "log_std") else "critic",
            params,
        )

    tx = optax.multi_transform({"actor": opt(), "critic": opt()}, labels)
    T, B = env.episode_length, config.num_envs
    keep_features = controller.uses_gradients and config.surrogate_gradients == "manual"
    # environments whose transitions estimate PLO's gradient products (the first ones)
    B_grad = {"full": B, "half": B // 2}.get(config.surrogate_batch, B // config.num_minibatches)
    split = config.surrogate_batch in ("half", "minibatch")  # cross-fitted halves of the subset

    def shard(x, axis):
        if mesh is None:
            return x
        spec = [None] * x.ndim
        spec[axis] = mesh.axis_names[0]
        return jax.lax.with_sharding_constraint(x, jax.NamedSharding(mesh, jax.P(*spec)))

    def get_cost(prev, action, nxt, index):
        return nxt.cost if cost_fn is None else cost_fn(prev, action, nxt, index)

    def init(key, limit, *, mask=None, index=None) -> TrainState:
        key = jax.random.wrap_key_data(key) if key.dtype == jnp.uint32 else key
        k_net, key = jax.random.split(key)
        params = nnx.state(
            Agent(
                env.observation_size,
                env.action_size,
                k,
                index_dim=index_dim,
                hidden=config.hidden,
                shared_critic=config.shared_critic,
                cost_hidden=config.cost_hidden,
                rngs=nnx.Rngs(params=k_net),
            )
        )
        limit = jnp.broadcast_to(jnp.asarray(limit, jnp.float32), (k,))
        mask = jnp.ones((k,), bool) if mask is None else jnp.asarray(mask, bool)
        # (k, 1) placeholder when unindexed: orbax cannot save zero-size arrays.
        index = (
            jnp.zeros((k, max(index_dim, 1))) if index is None else jnp.asarray(index, jnp.float32)
        )
        return TrainState(
            params,
            tx.init(params),
            controller.init(k),
            jnp.zeros((k,)),
            limit,
            mask,
            index,
            jax.random.key_data(key),
            jnp.int32(0),
        )

    def rollout(params, index, key):
        model = nnx.merge(graphdef, params)
        k_reset, k_act = jax.random.split(key)
        states = jax.vmap(env.reset)(jax.random.split(k_reset, B))
        states = jax.tree.map(lambda x: shard(x, 0), states)

        def one(carry, k):
            st, alive = carry
            if keep_features:  # the same forward pass as model.dist, keeping the activations
                feats = policy_features(model, st.obs)
                mean = model.policy.head(feats[-1])
                log_std = jnp.broadcast_to(model.log_std[...], mean.shape)
                feats = [f[:B_grad] for f in feats]
            else:
                feats, (mean, log_std) = None, model.dist(st.obs)
            a = sample_action(mean, log_std, key=k)
            v, vc = (None, None) if config.batched_values else model.values(st.obs, index)
            a_env = jnp.clip(a, -1.0, 1.0)
            nxt = jax.vmap(env.step)(st, a_env)
            c = jax.vmap(get_cost, in_axes=(0, 0, 0, None))(st, a_env, nxt, index)
            valid = alive.astype(jnp.float32)
            term = (nxt.done & alive).astype(jnp.float32)
            rec = Rollout(
                st.obs,
                a,
                gaussian_log_prob(mean, log_std, a),
                nxt.reward * valid,
                c * valid[:, None],
                v,
                vc,
                valid,
                term,
                feats,
            )
            return (nxt, alive & ~nxt.done), rec

        (last, _), traj = jax.lax.scan(
            one, (states, jnp.ones((B,), bool)), jax.random.split(k_act, T)
        )
        if not config.batched_values:
            boot_v, boot_c = model.values(last.obs, index)
            return traj, boot_v, boot_c
        v, vc = model.values(jnp.concatenate([traj.obs, last.obs[None]]), index)
        return traj._replace(value=v[:-1], cost_value=vc[:-1]), v[-1], vc[-1]

    def loss_fn(params, batch, lam, mask, index):
        obs, act, old_lp, adv_r, adv_c, tgt_r, tgt_c, valid = batch
        model = nnx.merge(graphdef, params)
        mean, log_std = model.dist(obs)
        lp = gaussian_log_prob(mean, log_std, act)
        ratio = jnp.exp(lp - old_lp)
        lam_m = jnp.where(mask, lam, 0.0)
        adv = (adv_r - adv_c @ lam_m) / (1.0 + jnp.sum(lam_m))
        clipped = jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps)
        pg = -jnp.minimum(ratio * adv, clipped * adv)
        v, vc = model.values(obs, index)
        v_loss = (v - tgt_r) ** 2 + jnp.sum(jnp.where(mask[None], (vc - tgt_c) ** 2, 0.0), axis=-1)
        ent = gaussian_entropy(log_std)
        per = pg + config.value_coef * v_loss - config.entropy_coef * ent
        return jnp.sum(per * valid) / jnp.maximum(jnp.sum(valid), 1.0)

    def normalise(adv, valid):
        w = valid.reshape(valid.shape + (1,) * (adv.ndim - valid.ndim))
        n = jnp.maximum(jnp.sum(w), 1.0)
        axes = tuple(range(valid.ndim))
        mu = jnp.sum(adv * w, axis=axes, keepdims=True) / n
        sd = jnp.sqrt(jnp.sum(((adv - mu) * w) ** 2, axis=axes, keepdims=True) / n)
        return (adv - mu) / (sd + 1e-8)

    def normalise_shared(adv, valid, mask):
        w = valid[..., None] * mask
        n = jnp.maximum(jnp.sum(valid), 1.0)
        mu = jnp.sum(adv * valid[..., None], axis=(0, 1)) / n
        centred = (adv - mu) * w
        sd = jnp.sqrt(jnp.sum(centred**2) / jnp.maximum(jnp.sum(w), 1.0))
        return centred / (sd + 1e-8)

    def step(state: TrainState):
        return iterate(state)

    def iterate(state: TrainState, refresh=None, stale=None):
        """One policy iteration; with a traced `refresh`, PLO's products are `stale` unless it."""
        key = jax.random.wrap_key_data(state.key)
        key, k_roll, k_perm = jax.random.split(key, 3)
        traj, boot_v, boot_c = rollout(state.params, state.index, k_roll)
        if config.batched_values and config.discount == config.cost_discount:
            # one scan over [T, B, 1 + k]: the reward channel first, then the costs
            tgt, adv = gae(
                jnp.concatenate([traj.reward[..., None], traj.cost], -1),
                jnp.concatenate([traj.value[..., None], traj.cost_value], -1),
                jnp.concatenate([boot_v[..., None], boot_c], -1),
                traj.termination[..., None],
                discount=config.discount,
                lambda_=config.gae_lambda,
            )
            tgt_r, adv_r, tgt_c, adv_c = tgt[..., 0], adv[..., 0], tgt[..., 1:], adv[..., 1:]
        else:
            tgt_r, adv_r = gae(
                traj.reward,
                traj.value,
                boot_v,
                traj.termination,
                discount=config.discount,
                lambda_=config.gae_lambda,
            )
            tgt_c, adv_c = gae(
                traj.cost,
                traj.cost_value,
                boot_c,
                traj.termination[..., None],
                discount=config.cost_discount,
                lambda_=config.gae_lambda,
            )
        adv_r = normalise(adv_r, traj.valid)
        if config.cost_advantage_scale == "shared":
            adv_c = normalise_shared(adv_c, traj.valid, state.mask)
        else:
            adv_c = normalise(adv_c, traj.valid)
        ep_return = jnp.mean(jnp.sum(traj.reward, 0))
        ep_cost = jnp.mean(jnp.sum(traj.cost, 0), 0)
        if controller.uses_gradients:

            def products():
                args = (traj.obs, traj.action, traj.valid, adv_r, adv_c)
                args = tuple(x[:, :B_grad] for x in args)
                if config.surrogate_gradients == "jacrev":
                    return surrogate_products_reference(graphdef, state.params, *args, split=split)
                model = nnx.merge(graphdef, state.params)
                return surrogate_products(model, *args, features=traj.features, split=split)

            if refresh is None:
                rdot, gram = products()
            else:
                rdot, gram = jax.lax.cond(refresh, products, lambda: stale)
        else:
            rdot, gram = jnp.zeros((k,)), jnp.zeros((k, k))
        signal = ConstraintSignal(ep_cost, state.limit, state.mask, rdot, gram)
        lam, ctrl_state = controller.update(state.ctrl_state, signal)

        data = (traj.obs, traj.action, traj.log_prob, adv_r, adv_c, tgt_r, tgt_c, traj.valid)
        if config.shuffle == "envs":  # permute whole unrolls: items are [B, T, ...]
            data, n = tuple(jnp.swapaxes(x, 0, 1) for x in data), B
        else:  # permute single transitions: items are [T * B, ...]
            data, n = tuple(x.reshape(T * B, *x.shape[2:]) for x in data), T * B

        def epoch(carry, k_ep):
            params, opt_state = carry
            perm = jax.random.permutation(k_ep, n)
            m, lead = config.num_minibatches, 2 if config.shuffle == "envs" else 1
            mb = jax.tree.map(lambda x: x[perm].reshape(m, T * B // m, *x.shape[lead:]), data)

            def minibatch(c, batch):
                p, o = c
                g = jax.grad(loss_fn)(p, batch, lam, state.mask, state.index)
                upd, o = tx.update(g, o, p)
                return (optax.apply_updates(p, upd), o), None

            return jax.lax.scan(minibatch, (params, opt_state), mb)[0], None

        (params, opt_state), _ = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(k_perm, config.num_epochs)
        )
        new = TrainState(
            params,
            opt_state,
            ctrl_state,
            lam,
            state.limit,
            state.mask,
            state.index,
            jax.random.key_data(key),
            state.iteration + 1,
        )
        metrics = {
            "episode_return": ep_return,
            "episode_cost": ep_cost,
            "lam": lam,
            "reward_dot": rdot,
        }
        if refresh is not None:
            metrics["gram"] = gram  # carried to the next iteration by `run`, then dropped
        return new, metrics

    def run(state: TrainState, num_iterations: int):
        every = config.products_every
        if every == 1 or not controller.uses_gradients:
            return jax.lax.scan(lambda s, _: step(s), state, None, length=num_iterations)

        def body(carry, i):
            s, stale = carry
            # the loop counter (not state.iteration) is never batched under vmap, so the
            # cond stays a branch instead of becoming a select of both
            s, m = iterate(s, i % every == 0, stale)
            return (s, (m["reward_dot"], m["gram"])), {n: v for n, v in m.items() if n != "gram"}

        zeros = (jnp.zeros((k,)), jnp.zeros((k, k)))
        (state, _), metrics = jax.lax.scan(
            body, (state, zeros), jnp.arange(num_iterations, dtype=jnp.int32)
        )
        return state, metrics

    return Trainer(init, step, run, graphdef, k)


def evaluate_policy(trainer_env, graphdef, params, index, *, key, num_episodes: int = 32):
    """Mean episode return and cost [costs] of the stochastic policy over fresh episodes."""
    env = trainer_env
    model = nnx.merge(graphdef, params)
    states = jax.vmap(env.reset)(jax.random.split(key, num_episodes))

    def one(carry, k):
        st, alive, ret, cost = carry
        mean, log_std = model.dist(st.obs)
        a = sample_action(mean, log_std, key=k)
        nxt = jax.vmap(env.step)(st, jnp.clip(a, -1.0, 1.0))
        v = alive.astype(jnp.float32)
        return (nxt, alive & ~nxt.done, ret + v * nxt.reward, cost + v[:, None] * nxt.cost), None

    init = (
        states,
        jnp.ones((num_episodes,), bool),
        jnp.zeros((num_episodes,)),
        jnp.zeros((num_episodes, env.num_costs)),
    )
    (_, _, ret, cost), _ = jax.lax.scan(one, init, jax.random.split(key, env.episode_length))
    return jnp.mean(ret), jnp.mean(cost, 0)
