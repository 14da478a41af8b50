"""PLO's gradient signal: inner products of the reward and cost surrogates' policy gradients.

With per-sample weights `s_i(n) = w(n) A_i(n)` (`w` the valid-step weights, `A_0` the reward
advantage, `A_1..A_k` the cost advantages), the surrogate gradients are
`g_i = sum_n s_i(n) ∇ log π(a_n | o_n)`, and PLO needs only `g_c·g_r` and the Gram matrix
`g_c·g_cᵀ`. `surrogate_products_reference` takes one `jax.jacrev` of the `1 + k` surrogates
(one forward, `1 + k` backward passes of the policy on the whole batch). `surrogate_products`
writes the backward pass of the Gaussian tanh-MLP policy by hand: the per-sample backward
signal does not depend on `i` (the weights enter only as a per-sample scale), so it is
propagated once and only the weight-gradient products are taken per surrogate, kernel and
bias gradients of all `1 + k` in one matmul per layer; the forward activations can be passed
in from the rollout. With `split=True` both cross-fit two halves of the environments (products
of gradients from disjoint samples: unbiased, where a same-sample product is biased upward by
`tr Cov / n`).
"""

import jax
import jax.numpy as jnp
from flax import nnx
from jax.flatten_util import ravel_pytree

from ._networks import Agent, gaussian_log_prob
from ._types import Array, Costs, Float

# the cross-fitted ‖g_c‖² is floored at this share of ‖ĝ_c^A‖ ‖ĝ_c^B‖ (see surrogate_products)
SPLIT_DIAG_FLOOR = 0.1


def surrogate_products_reference(
    graphdef,
    params,
    obs,
    action,
    valid,
    adv_r,
    adv_c,
    *,
    split: bool = False,
    diag_floor: float | None = SPLIT_DIAG_FLOOR,
) -> tuple[Costs, Float[Array, "costs costs"]]:
    """(g_c·g_r, g_c·g_cᵀ) from one `jax.jacrev` of the surrogates (the reference).

    `split=True`: the cross-fitted products of `surrogate_products(..., split=True)`, from
    the surrogates of each half of the environments (axis 1), with the same `diag_floor`.
    """
    k = adv_c.shape[-1]
    b = valid.shape[1]
    if split and b % 2:
        raise ValueError(f"valid: split=True needs an even number of envs, got {b}")
    halves = (slice(0, b // 2), slice(b // 2, b)) if split else (slice(0, b),)
    ws = []
    for h in halves:
        v = jnp.zeros_like(valid).at[:, h].set(valid[:, h])
        ws.append(v / jnp.maximum(v.sum(), 1.0))

    def surrogates(p):
        model = nnx.merge(graphdef, p)
        mean, log_std = model.dist(obs)
        lp = gaussian_log_prob(mean, log_std, action)
        return jnp.concatenate(
            [
                jnp.concatenate(
                    [jnp.sum(w * lp * adv_r)[None], jnp.einsum("tb,tb,tbk->k", w, lp, adv_c)]
                )
                for w in ws
            ]
        )

    jac = jax.jacrev(surrogates)(params)
    flat = jax.vmap(lambda i: ravel_pytree(jax.tree.map(lambda x: x[i], jac))[0])(
        jnp.arange(len(ws) * (k + 1))
    )
    if not split:
        g_r, g_c = flat[0], flat[1:]
        return g_c @ g_r, g_c @ g_c.T
    g_a, g_b = flat[: k + 1], flat[k + 1 :]
    cross = g_a @ g_b.T
    cross = 0.5 * (cross + cross.T)
    rdot, gram = cross[1:, 0], cross[1:, 1:]
    if diag_floor is not None:
        floor = diag_floor * jnp.linalg.norm(g_a[1:], axis=-1) * jnp.linalg.norm(g_b[1:], axis=-1)
        gram = gram.at[jnp.arange(k), jnp.arange(k)].set(jnp.maximum(jnp.diagonal(gram), floor))
    return rdot, gram


def policy_features(model: Agent, obs) -> list[Array]:
    """The policy MLP's hidden activations (tanh outputs), for `surrogate_products`."""
    feats, x = [], obs
    for layer in model.policy.layers:
        x = jnp.tanh(layer(x))
        feats.append(x)
    return feats


def surrogate_products(
    model: Agent,
    obs,
    action,
    valid,
    adv_r,
    adv_c,
    features=None,
    *,
    split: bool = False,
    diag_floor: float | None = SPLIT_DIAG_FLOOR,
) -> tuple[Costs, Float[Array, "costs costs"]]:
    """(g_c·g_r, g_c·g_cᵀ) with a hand-written backward pass of the policy (see the module).

    `obs [..., obs]`, `action [..., act]`, `valid [...]`, `adv_r [...]`, `adv_c [..., k]`;
    `features`: the policy's hidden activations on `obs` (`policy_features`), recomputed
    when None. Equal to `surrogate_products_reference` up to float rounding.

    `split=True` (inputs `[time, envs, ...]`, an even number of envs) cross-fits: the
    gradients `ĝ^A`, `ĝ^B` of the first and second half of the environments (each half's
    valid steps weighted by its own count) give `(ĝ_c^A·ĝ_r^B + ĝ_c^B·ĝ_r^A) / 2` and the
    symmetrised `ĝ_c^A·ĝ_c^Bᵀ`, unbiased for the products of the expected gradients (the
    same-sample products are biased upward by the sampling noise, `tr Cov / n`). Same flops
    as `split=False` on the same data. An unbiased `‖g_c‖²` can come out ≤ 0 when noise
    dominates; PLO divides by it, so its diagonal is floored at `diag_floor · ‖ĝ_c^A‖ ‖ĝ_c^B‖`
    (None: no floor, the plain cross-fitted estimate).
    """
    k = adv_c.shape[-1]
    if split:
        t, b = valid.shape
        if b % 2:
            raise ValueError(f"valid: split=True needs an even number of envs, got {b}")

        def halves(x):  # [T, B, ...] -> [2, T * B / 2, ...]: envs [:B/2] then [B/2:]
            x = x.reshape(t, 2, b // 2, *x.shape[2:])
            return jnp.swapaxes(x, 0, 1).reshape(2, t * b // 2, *x.shape[3:])

        obs, action, valid, adv_r, adv_c = map(halves, (obs, action, valid, adv_r, adv_c))
        features = None if features is None else [halves(f) for f in features]
    g = 2 if split else 1
    n = valid.size // g
    valid = valid.reshape(g, n, 1)
    w = valid / jnp.maximum(valid.sum(1, keepdims=True), 1.0)
    s = w * jnp.concatenate([adv_r.reshape(g, n, 1), adv_c.reshape(g, n, k)], axis=-1)
    x = obs.reshape(g, n, obs.shape[-1])
    feats = policy_features(model, x) if features is None else features
    hs = [x] + [f.reshape(g, n, f.shape[-1]) for f in feats]
    mean = model.policy.head(hs[-1])
    inv_std = jnp.exp(-model.log_std[...])[None, None]
    z = (action.reshape(g, n, -1) - mean) * inv_std
    # d log π / d mean, and d log π / d log_std, per sample; s [g, n, 1 + k]
    delta = z * inv_std
    blocks = [jnp.einsum("gnc,gna->gca", s, z * z - 1.0)]
    layers = [*model.policy.layers, model.policy.head]
    ones = jnp.ones((g, n, 1), delta.dtype)
    for i in reversed(range(len(layers))):
        h, out = hs[i], delta.shape[-1]
        # kernel and bias gradients of all 1 + k surrogates in one matmul: [h, 1]ᵀ [s_0 δ, ...]
        # (the surrogates side by side, not interleaved: XLA vectorises plain broadcasts)
        scaled = jnp.concatenate([s[..., c : c + 1] * delta for c in range(k + 1)], axis=-1)
        kernel = jnp.einsum("gni,gnj->gij", jnp.concatenate([h, ones], axis=-1), scaled)
        blocks.append(jnp.swapaxes(kernel.reshape(g, -1, k + 1, out), 1, 2).reshape(g, k + 1, -1))
        if i > 0:
            delta = (delta @ layers[i].kernel[...].T) * (1.0 - h * h)
    flat = jnp.concatenate(blocks, axis=-1)  # [g, 1 + k, policy parameters]
    if not split:
        gram = flat[0] @ flat[0].T
        return gram[1:, 0], gram[1:, 1:]
    cross = flat[0] @ flat[1].T
    cross = 0.5 * (cross + cross.T)
    rdot, gram = cross[1:, 0], cross[1:, 1:]
    if diag_floor is not None:
        norms = jnp.sqrt(jnp.sum(flat[:, 1:] ** 2, axis=-1))  # [2, k]: ‖ĝ_c^A‖, ‖ĝ_c^B‖
        diag = jnp.maximum(jnp.diagonal(gram), diag_floor * norms[0] * norms[1])
        gram = gram.at[jnp.arange(k), jnp.arange(k)].set(diag)
    return rdot, gram
