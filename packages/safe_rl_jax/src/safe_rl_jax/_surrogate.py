"""PLO's gradient signal: inner products of the reward and cost surrogates' policy gradients.

With per-sample weights `s_i(n) = w(n) A_i(n)` (`w` the valid-step weights, `A_0` the reward
advantage, `A_1..A_k` the cost advantages), the surrogate gradients are
`g_i = sum_n s_i(n) ∇ log π(a_n | o_n)`, and PLO needs only `g_c·g_r` and the Gram matrix
`g_c·g_cᵀ`. `surrogate_products_reference` takes one `jax.jacrev` of the `1 + k` surrogates
(one forward, `1 + k` backward passes of the policy on the whole batch). `surrogate_products`
writes the backward pass of the Gaussian tanh-MLP policy by hand: the per-sample backward
signal does not depend on `i` (the weights enter only as a per-sample scale), so it is
propagated once and only the weight-gradient products are taken per surrogate, all `1 + k` in
one matmul per layer; the forward activations can be passed in from the rollout.
"""

import jax
import jax.numpy as jnp
from flax import nnx
from jax.flatten_util import ravel_pytree

from ._networks import Agent, gaussian_log_prob
from ._types import Array, Costs, Float


def surrogate_products_reference(
    graphdef, params, obs, action, valid, adv_r, adv_c
) -> tuple[Costs, Float[Array, "costs costs"]]:
    """(g_c·g_r, g_c·g_cᵀ) from one `jax.jacrev` of the surrogates (the reference)."""
    k = adv_c.shape[-1]
    w = valid / jnp.maximum(valid.sum(), 1.0)

    def surrogates(p):
        model = nnx.merge(graphdef, p)
        mean, log_std = model.dist(obs)
        lp = gaussian_log_prob(mean, log_std, action)
        return jnp.concatenate(
            [jnp.sum(w * lp * adv_r)[None], jnp.einsum("tb,tb,tbk->k", w, lp, adv_c)]
        )

    jac = jax.jacrev(surrogates)(params)
    flat = jax.vmap(lambda i: ravel_pytree(jax.tree.map(lambda x: x[i], jac))[0])(jnp.arange(k + 1))
    g_r, g_c = flat[0], flat[1:]
    return g_c @ g_r, g_c @ g_c.T


def policy_features(model: Agent, obs) -> list[Array]:
    """The policy MLP's hidden activations (tanh outputs), for `surrogate_products`."""
    feats, x = [], obs
    for layer in model.policy.layers:
        x = jnp.tanh(layer(x))
        feats.append(x)
    return feats


def surrogate_products(
    model: Agent, obs, action, valid, adv_r, adv_c, features=None
) -> tuple[Costs, Float[Array, "costs costs"]]:
    """(g_c·g_r, g_c·g_cᵀ) with a hand-written backward pass of the policy (see the module).

    `obs [..., obs]`, `action [..., act]`, `valid [...]`, `adv_r [...]`, `adv_c [..., k]`;
    `features`: the policy's hidden activations on `obs` (`policy_features`), recomputed
    when None. Equal to `surrogate_products_reference` up to float rounding.
    """
    k = adv_c.shape[-1]
    n = valid.size
    w = (valid / jnp.maximum(valid.sum(), 1.0)).reshape(n, 1)
    s = w * jnp.concatenate([adv_r.reshape(n, 1), adv_c.reshape(n, k)], axis=1)  # [n, 1 + k]
    x = obs.reshape(n, obs.shape[-1])
    feats = policy_features(model, x) if features is None else features
    hs = [x] + [f.reshape(n, f.shape[-1]) for f in feats]
    mean = model.policy.head(hs[-1])
    inv_std = jnp.exp(-model.log_std[...])[None]
    z = (action.reshape(n, -1) - mean) * inv_std
    # d log π / d mean, and d log π / d log_std, per sample
    delta = z * inv_std
    blocks = [s.T @ (z * z - 1.0)]
    layers = [*model.policy.layers, model.policy.head]
    for i in reversed(range(len(layers))):
        h, out = hs[i], delta.shape[-1]
        blocks.append(s.T @ delta)  # bias gradients [1 + k, out]
        scaled = (s[:, :, None] * delta[:, None, :]).reshape(n, (k + 1) * out)
        kernel = (h.T @ scaled).reshape(h.shape[-1], k + 1, out)  # [in, 1 + k, out]
        blocks.append(jnp.moveaxis(kernel, 1, 0).reshape(k + 1, -1))
        if i > 0:
            delta = (delta @ layers[i].kernel[...].T) * (1.0 - h * h)
    flat = jnp.concatenate(blocks, axis=1)  # [1 + k, policy parameters]
    gram = flat @ flat.T
    return gram[1:, 0], gram[1:, 1:]
