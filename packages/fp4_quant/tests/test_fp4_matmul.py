"""The quantized matmul: reference GEMMs per recipe, custom VJP, HCP patch, policies, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fp4_quant as fq
from testkit import assert_trees_close

KEY = jax.random.key(0)
X = jax.random.normal(jax.random.key(1), (2, 16, 64))
W = 0.1 * jax.random.normal(jax.random.key(2), (64, 48))
RECIPES = [fq.HIGH_PRECISION, fq.PLAIN_NVFP4, fq.NVIDIA_NVFP4, fq.PLAIN_MXFP4]


def _loss(x, w, recipe, channels=None):
    y = fq.quantized_matmul(x, w, recipe=recipe, key=KEY, hot_channels=channels)
    return jnp.sum(jnp.sin(y))


_grad = jax.jit(jax.grad(_loss, argnums=(0, 1)), static_argnums=2)


def _reference_grads(x, w, recipe):
    """The three GEMMs written out with `fake_quantize` (no RHT/SR: deterministic recipes)."""
    x2 = x.reshape(-1, 64)
    xq = fq.fake_quantize(x2, recipe)
    wq = fq.fake_quantize(w.T, recipe, weight=True).T
    dy = jnp.cos(xq @ wq)
    dyq = fq.fake_quantize(dy, recipe)
    dx = dyq @ fq.fake_quantize(w, recipe, weight=True).T
    dw = fq.fake_quantize(x2.T, recipe) @ fq.fake_quantize(dy.T, recipe).T
    return dx.reshape(x.shape), dw


@pytest.mark.parametrize("recipe", [fq.HIGH_PRECISION, fq.PLAIN_NVFP4])
def test_grads_match_written_out_reference(recipe):
    ref = jax.jit(_reference_grads, static_argnums=2)(X, W, recipe)
    assert_trees_close(_grad(X, W, recipe), ref, rtol=1e-4, atol=1e-5)


def test_runtime_gates_switch_quantization_and_patch_off():
    x, w, hot = _planted(jax.random.key(3))
    r = fq.MatmulRecipe("nvfp4", weight_2d=True, sr_grad=False, rht_wgrad=True)

    @jax.jit
    def run(gates):
        f = lambda x, w: jnp.sum(
            jnp.sin(fq.quantized_matmul(x, w, recipe=r, key=KEY, hot_channels=hot, gates=gates))
        )
        return f(x, w), jax.grad(f, argnums=(0, 1))(x, w)

    off = run(jnp.array([0.0, 0.0]))
    exact = (jnp.sum(jnp.sin(x @ w)), jax.grad(lambda x, w: jnp.sum(jnp.sin(x @ w)), (0, 1))(x, w))
    assert_trees_close(off, exact, rtol=1e-4, atol=1e-4)
    nopatch = run(jnp.array([1.0, 0.0]))[0]
    static = jnp.sum(jnp.sin(fq.quantized_matmul(x, w, recipe=r, key=KEY)))
    np.testing.assert_allclose(float(nopatch), float(static), rtol=1e-4)
    patched = run(jnp.array([1.0, 1.0]))[0]
    assert abs(float(patched - exact[0])) < abs(float(nopatch - exact[0]))
    with pytest.raises(ValueError, match="gates"):
        fq.quantized_matmul(x, w, recipe=fq.PLAIN_NVFP4, gates=jnp.ones(3))


def test_runtime_gates_turn_the_nvidia_recipe_into_plain_nvfp4():
    """gates[2:5] = 0 (no SR, no RHT, 1x16 weights) inside an NVIDIA-recipe graph give the
    static PLAIN_NVFP4 matmul: values and both gradients."""
    x, w, _ = _planted(jax.random.key(4))

    def loss(recipe, key, gates):
        def f(x, w):
            y = fq.quantized_matmul(x, w, recipe=recipe, key=key, gates=gates)
            return jnp.sum(jnp.sin(y))

        return jax.jit(lambda x, w: (f(x, w), jax.grad(f, argnums=(0, 1))(x, w)))(x, w)

    gated = loss(fq.NVIDIA_NVFP4, KEY, jnp.array([1.0, 0.0, 0.0, 0.0, 0.0]))
    static = loss(fq.PLAIN_NVFP4, None, None)
    assert_trees_close(gated, static, rtol=1e-5, atol=1e-6)
    full = loss(fq.NVIDIA_NVFP4, KEY, jnp.ones(5))
    assert_trees_close(full, loss(fq.NVIDIA_NVFP4, KEY, None), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(full[1][1]), np.asarray(static[1][1]))


def test_high_precision_recipe_is_plain_matmul():
    y = fq.quantized_matmul(X, W, recipe=fq.HIGH_PRECISION)
    np.testing.assert_allclose(np.asarray(y), np.asarray(X @ W), rtol=1e-6)
    g_ref = jax.grad(lambda x, w: jnp.sum(jnp.sin(x @ w)), argnums=(0, 1))(X, W)
    assert_trees_close(_grad(X, W, fq.HIGH_PRECISION), g_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("recipe", RECIPES[1:])
def test_quantized_grads_close_to_exact_and_finite(recipe):
    gx, gw = _grad(X, W, recipe)
    ex, ew = _grad(X, W, fq.HIGH_PRECISION)
    for g, e in ((gx, ex), (gw, ew)):
        assert bool(jnp.all(jnp.isfinite(g)))
        assert float(jnp.linalg.norm(g - e) / jnp.linalg.norm(e)) < 0.35


def test_stochastic_rounding_gradients_are_unbiased_on_average():
    """SR on dY is unbiased: the mean wgrad over keys approaches Q(X)^T dY (X rounded to
    nearest) much closer than a single draw does."""
    r = fq.MatmulRecipe("nvfp4", weight_2d=False, sr_grad=True, rht_wgrad=False)

    @jax.jit
    def wgrad(key):
        f = lambda w: jnp.sum(fq.quantized_matmul(X, w, recipe=r, key=key) * X[..., :48])
        return jax.grad(f)(W)

    keys = jax.random.split(jax.random.key(5), 32)
    mean = jnp.mean(jax.lax.map(wgrad, keys), axis=0)
    dy = X[..., :48].reshape(-1, 48)
    exact = fq.fake_quantize(X.reshape(-1, 64).T, r) @ dy
    one = wgrad(keys[0])
    err_mean = float(jnp.linalg.norm(mean - exact))
    assert err_mean < 0.5 * float(jnp.linalg.norm(one - exact))


def _planted(key, m=64, k=64, n=32, hot=(3, 17, 40, 58)):
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (m, k))
    x = x.at[:, jnp.array(hot)].multiply(60.0)
    w = 0.1 * jax.random.normal(kw, (k, n))
    return x, w, jnp.array(hot, jnp.int32)


@given(st.integers(0, 2**30))
def test_hcp_patch_cuts_error_on_planted_hot_channels(seed):
    x, w, hot = _planted(jax.random.key(seed))
    plain = fq.quantization_sensitivity(x, w, fq.PLAIN_NVFP4)
    patched = fq.quantization_sensitivity(x, w, fq.PLAIN_NVFP4, hot)
    assert float(patched) < 0.8 * float(plain)


def test_hcp_on_all_channels_leaves_only_second_order_term():
    x, w, _ = _planted(jax.random.key(0))
    allc = jnp.arange(64, dtype=jnp.int32)
    y = fq.quantized_matmul(x, w, recipe=fq.PLAIN_NVFP4, hot_channels=allc)
    dx = x - fq.fake_quantize(x, fq.PLAIN_NVFP4)
    dw = w - fq.fake_quantize(w.T, fq.PLAIN_NVFP4, weight=True).T
    np.testing.assert_allclose(np.asarray(y), np.asarray(x @ w - dx @ dw), rtol=1e-4, atol=1e-3)


def test_policies_route_projections():
    p = fq.chon_policy(hcp_k=4)
    assert p.recipe_for(0, "o_proj") == fq.HIGH_PRECISION
    assert p.recipe_for(0, "gk_proj") == fq.HIGH_PRECISION
    assert p.recipe_for(1, "qkv_proj") == fq.NVIDIA_NVFP4
    assert p.hcp_k_for(0, "qkv_proj") == 4 and p.hcp_k_for(0, "o_proj") == 0
    q = fq.nvidia_policy(high_precision_layers=(1,))
    assert q.recipe_for(1, "down_proj") == fq.HIGH_PRECISION
    assert fq.plain_nvfp4_policy().recipe_for(0, "o_proj") == fq.PLAIN_NVFP4
    with pytest.raises(ValueError, match="hcp_k"):
        fq.chon_policy(hcp_k=0)


@pytest.mark.shape_checks_off  # the library's own error, not jaxtyping's
def test_matmul_bad_inputs_raise_named_errors():
    with pytest.raises(ValueError, match="w: expected 64 rows"):
        fq.quantized_matmul(X, jnp.ones((32, 8)), recipe=fq.PLAIN_NVFP4)
    with pytest.raises(ValueError, match="key"):
        fq.quantized_matmul(X, W, recipe=fq.NVIDIA_NVFP4)
    with pytest.raises(TypeError, match="recipe"):
        fq.quantized_matmul(X, W, recipe="nvfp4")
    with pytest.raises(ValueError, match="recipe.fmt"):
        fq.quantized_matmul(X, W, recipe=fq.MatmulRecipe(fmt="int4"))
    with pytest.raises(TypeError, match="hot_channels"):
        fq.quantized_matmul(X, W, recipe=fq.PLAIN_NVFP4, hot_channels=jnp.ones(3))
    with pytest.raises(TypeError, match="x: expected a floating"):
        fq.quantized_matmul(jnp.ones((4, 64), jnp.int32), W, recipe=fq.PLAIN_NVFP4)
