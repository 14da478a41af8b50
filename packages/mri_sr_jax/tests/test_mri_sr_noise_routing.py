"""Session 10: noise-level-aware routing (`MoEDiffSR(noise_routing=...)`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mri_sr_jax as msr
from testkit import assert_trees_close

SCH = msr.cosine_schedule()


def moe(trunk_depth=1, **kw):
    return msr.init_fast(
        lambda: msr.MoEDiffSR(
            1, expert_width=4, expert_depth=1 - trunk_depth, trunk_depth=trunk_depth,
            feature_dim=8, emb_dim=6, rngs=nnx.Rngs(0), **kw,
        ),
        seed=0,
    )  # fmt: skip


def _shared(model):
    """The parameters a noise-routing model has in common with the noise-blind one."""
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {k: v[...] for k, v in flat if k[0] != "vary_with_noise"}


@pytest.mark.parametrize("trunk_depth", [1, 0])
def test_zero_initialised_noise_routing_is_the_committed_model(trunk_depth):
    """At its zero init the option changes nothing: `init_fast` draws every other parameter
    as without it, and the outputs and gates are equal; it adds emb_dim x k parameters
    ("embedding"; feature_dim x k without a shared trunk) or knots x k ("bands")."""
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    cond = 0.1 + jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
    ab = jnp.array([0.2, 0.9])
    base = moe(trunk_depth)
    emb = 6 if trunk_depth else 8
    ref = jax.jit(lambda s: nnx.merge(nnx.graphdef(base), s).forward_all(x, cond, ab))(
        nnx.state(base)
    )
    for kind, extra in (("embedding", emb * 3), ("bands", 4 * 3)):
        m = moe(trunk_depth, noise_routing=kind, noise_knots=4)
        assert msr.count_params(m) == msr.count_params(base) + extra
        assert jax.tree.all(jax.tree.map(np.array_equal, _shared(m), _shared(base)))
        assert not np.any(m.vary_with_noise.bias[...])
        out = jax.jit(lambda s, m=m: nnx.merge(nnx.graphdef(m), s).forward_all(x, cond, ab))(
            nnx.state(m)
        )
        assert_trees_close(out, ref, rtol=0, atol=0)


def test_noise_routing_trains_under_jit_and_moves_the_gate_with_the_noise_level():
    """Gradients of a loss on the aggregate reach the routing weights (finite, non-zero);
    with non-zero weights the gate differs between noise levels for the same conditioning,
    and "bands" interpolates its knot rows linearly in sqrt(alpha_bar)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 16, 16, 1)), jnp.float32)
    target = jnp.asarray(rng.standard_normal((2, 16, 16, 1)), jnp.float32)
    for kind in ("embedding", "bands"):
        m = moe(noise_routing=kind)
        gd, state = nnx.split(m)

        @jax.jit
        def grads(state, ab, gd=gd):
            def loss(s):
                return jnp.mean((nnx.merge(gd, s)(x, x, ab) - target) ** 2)

            return jax.grad(loss)(state)

        g = grads(state, jnp.array([0.2, 0.7]))["vary_with_noise"]["bias"][...]
        assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0
    m.vary_with_noise.bias[...] = jnp.asarray(rng.standard_normal((5, 3)), jnp.float32)
    cond = jnp.ones((1, 16, 16, 1))
    gate = jax.jit(
        lambda s, ab: nnx.merge(nnx.graphdef(m), s).forward_all(jnp.zeros_like(cond), cond, ab)[2]
    )
    lo, hi = gate(nnx.state(m), jnp.array([0.1])), gate(nnx.state(m), jnp.array([0.8]))
    assert float(jnp.abs(lo - hi).max()) > 1e-3
    # gamma = 0.375 lies halfway between knots 1 (0.25) and 2 (0.5)
    offs = m.vary_with_noise(jnp.array([0.375**2]), None)
    bias = m.vary_with_noise.bias[...]
    assert_trees_close(offs[0], 0.5 * (bias[1] + bias[2]), rtol=1e-5, atol=1e-6)


def test_bad_noise_routing_values_raise_naming_the_argument():
    with pytest.raises(ValueError, match="noise_routing"):
        msr.MoEDiffSR(1, noise_routing="sigma", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="noise_knots"):
        msr.MoEDiffSR(1, noise_routing="bands", noise_knots=1, rngs=nnx.Rngs(0))
