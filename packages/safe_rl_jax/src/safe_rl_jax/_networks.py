"""Flax NNX networks: Gaussian policy, reward critic, (index-conditioned) cost critic."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ._types import Array, Float


class MLP(nnx.Module):
    """tanh MLP with a linear head."""

    def __init__(self, sizes: Sequence[int], *, rngs: nnx.Rngs, head_scale: float = 1.0):
        init = nnx.initializers.orthogonal(jnp.sqrt(2.0))
        self.layers = nnx.List(
            [
                nnx.Linear(a, b, kernel_init=init, rngs=rngs)
                for a, b in zip(sizes[:-2], sizes[1:-1], strict=True)
            ]
        )
        self.head = nnx.Linear(
            sizes[-2], sizes[-1], kernel_init=nnx.initializers.orthogonal(head_scale), rngs=rngs
        )

    def __call__(self, x):
        for layer in self.layers:
            x = jnp.tanh(layer(x))
        return self.head(x)


class CostCritic(nnx.Module):
    """V_c for `num_costs` channels, or V_c(s, y) conditioned on a constraint index y.

    With `index_dim == 0` there is one head per cost channel; with `index_dim > 0` a single
    network reads `concat(obs, y)`, so a new constraint y needs no new parameters (EPO).
    """

    def __init__(self, obs_size: int, num_costs: int, index_dim: int, hidden, *, rngs):
        self.index_dim = index_dim
        out = num_costs if index_dim == 0 else 1
        self.net = MLP([obs_size + index_dim, *hidden, out], rngs=rngs)

    def __call__(
        self, obs: Float[Array, "... obs"], index: Float[Array, "costs index_dim"]
    ) -> Float[Array, "... costs"]:
        if self.index_dim == 0:
            return self.net(obs)
        if not self.net.layers:  # no hidden layer: the linear head on concat(obs, y)
            k = index.shape[0]
            o = jnp.broadcast_to(obs[..., None, :], (*obs.shape[:-1], k, obs.shape[-1]))
            y = jnp.broadcast_to(index, (*obs.shape[:-1], k, index.shape[-1]))
            return self.net.head(jnp.concatenate([o, y], axis=-1))[..., 0]
        # First layer of net(concat(obs, y)) split as obs @ W_o + y @ W_y + b: the obs part
        # once per observation, the index part once per slot, broadcast over [..., k]
        # (the same function as the concatenated input, without k copies of every obs).
        first, n = self.net.layers[0], obs.shape[-1]
        kernel = first.kernel[...]
        per_slot = index @ kernel[n:] + first.bias[...][None]  # [k, hidden]
        per_slot = per_slot.reshape((1,) * (obs.ndim - 1) + per_slot.shape)
        x = jnp.tanh((obs @ kernel[:n])[..., None, :] + per_slot)
        for layer in self.net.layers[1:]:
            x = jnp.tanh(layer(x))
        return self.net.head(x)[..., 0]


class Agent(nnx.Module):
    """Gaussian policy (state-independent log-std) plus reward and cost critics.

    `shared_critic=True` (unindexed costs only) uses one critic network with `1 + num_costs`
    linear heads (reward value first) instead of a reward MLP beside a cost MLP: half the
    critic compute, at the price of the two value losses sharing the hidden layers.
    `cost_hidden` sets the cost critic's hidden sizes (default: `hidden`).
    """

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        num_costs: int,
        *,
        index_dim: int = 0,
        hidden: Sequence[int] = (64, 64),
        shared_critic: bool = False,
        cost_hidden: Sequence[int] | None = None,
        rngs: nnx.Rngs,
    ):
        if shared_critic and cost_hidden is not None:
            raise ValueError(
                f"cost_hidden: needs separate critics (shared_critic=False), got {cost_hidden}"
            )
        if shared_critic and index_dim:
            raise ValueError(
                f"shared_critic: needs unindexed costs (index_dim=0), got index_dim={index_dim}"
            )
        self.shared_critic = shared_critic
        self.policy = MLP([obs_size, *hidden, action_size], rngs=rngs, head_scale=0.01)
        self.log_std = nnx.Param(jnp.full((action_size,), -0.5, jnp.float32))
        if shared_critic:
            self.value = MLP([obs_size, *hidden, 1 + num_costs], rngs=rngs)
        else:
            self.value = MLP([obs_size, *hidden, 1], rngs=rngs)
            cost_hidden = hidden if cost_hidden is None else cost_hidden
            self.cost_value = CostCritic(obs_size, num_costs, index_dim, cost_hidden, rngs=rngs)

    def dist(self, obs):
        return self.policy(obs), jnp.broadcast_to(
            self.log_std[...], (*obs.shape[:-1], self.log_std.shape[0])
        )

    def values(self, obs, index):
        if self.shared_critic:
            out = self.value(obs)
            return out[..., 0], out[..., 1:]
        return self.value(obs)[..., 0], self.cost_value(obs, index)


def gaussian_log_prob(mean, log_std, x):
    """Sum over action dims of the diagonal Gaussian log-density."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def gaussian_entropy(log_std):
    return jnp.sum(log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e), axis=-1)


def sample_action(mean, log_std, *, key):
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
