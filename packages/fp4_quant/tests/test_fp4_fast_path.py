"""The fast jnp NVFP4 path (bit tricks, comparisons) equals the obviously-right reference."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fp4_quant as fq
from fp4_quant._e2m1 import e2m1_encode, pack_e2m1
from fp4_quant._nvfp4 import _quantize, fake_quantize_nvfp4, fake_quantize_reference, nvfp4_parts
from fp4_quant._nvfp4_fast import e2m1_index, e2m1_magnitude, e4m3_round

wide = st.floats(-3e4, 3e4, allow_nan=False, width=32)
mat = hnp.arrays(np.float32, (32, 32), elements=wide)
# multiples of 1/8 hit the E2M1 rounding midpoints exactly after scaling by a power of two
ties = hnp.arrays(np.float32, (32, 32), elements=st.integers(-48, 48).map(lambda i: i / 8))


def _reference_packed(x, block_rows):
    q, bs, ts = nvfp4_parts(x, block_rows, "nearest", None)
    return pack_e2m1(e2m1_encode(q)), bs, ts


@jax.jit
def _both(x, key):
    out = []
    for br in (1, 16):
        out.append((_quantize(x, br, "nearest", None), _reference_packed(x, br)))
        out.append((fake_quantize_nvfp4(x, br), fake_quantize_reference(x, br)))
        sr = (
            fake_quantize_nvfp4(x, br, "stochastic", key),
            fake_quantize_reference(x, br, "stochastic", key),
        )
        out.append(sr)
    return out


def _assert_same(x, key=0):
    for fast, ref in _both(jnp.asarray(x), jax.random.key(key)):
        for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(ref), strict=True):
            a, b = np.asarray(a).astype(np.float32), np.asarray(b).astype(np.float32)
            np.testing.assert_array_equal(a, b)  # NaN == NaN here, -0 == 0


@given(mat)
def test_fast_path_equals_reference_bit_for_bit(x):
    _assert_same(x)


@given(ties)
def test_fast_path_equals_reference_at_rounding_ties(x):
    _assert_same(x)


def test_fast_path_equals_reference_on_special_blocks():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 64)).astype(np.float32) * 10.0 ** rng.uniform(-3, 3, (32, 1))
    x[0, 3], x[1, 17], x[2, 40] = np.nan, np.inf, -np.inf  # poisoned blocks
    x[3, 0:16] = 0.0  # empty block
    x[4, 16:32] = 1e-30  # flushes to a zero block scale
    x[5, 0], x[5, 1] = -0.0, -1e-12  # negative zeros / underflow keep their sign
    x[6] = 1e6  # the tensor amax sits in a finite block
    for scale in (1.0, 1e-36, 1e30):
        _assert_same(x * np.float32(scale))


def test_e4m3_rounding_matches_the_fp8_cast():
    grid = np.linspace(0.0, 448.0, 100_001, dtype=np.float32)
    logs = np.exp2(np.random.default_rng(1).uniform(-14, 8.8, 50_000)).astype(np.float32)
    y = jnp.asarray(np.minimum(np.concatenate([grid, logs, [np.nan]]), 448.0))
    ours = np.asarray(jax.jit(e4m3_round)(y))
    cast = np.asarray(y.astype(jnp.float8_e4m3fn).astype(jnp.float32))
    np.testing.assert_array_equal(ours, cast)


@given(hnp.arrays(np.float32, (64,), elements=st.floats(0.0, 10.0, width=32)))
def test_e2m1_index_by_comparisons_matches_rounding(a):
    a = jnp.asarray(a)
    mag = e2m1_magnitude(e2m1_index(a))
    np.testing.assert_array_equal(np.asarray(mag), np.asarray(fq.round_to_e2m1(a)))


@pytest.mark.parametrize("block", ["1x16", "16x16"])
def test_tensor_scale_ignores_finite_values_of_poisoned_blocks(block):
    x = jnp.ones((16, 32)).at[0, 0].set(jnp.nan).at[0, 1].set(1000.0)
    t = fq.nvfp4_quantize(x, block=block)  # 1000 shares its block with the NaN
    np.testing.assert_allclose(float(t.tensor_scale), 1.0 / 2688.0, rtol=1e-6)
    assert np.isnan(np.asarray(fq.nvfp4_dequantize(t))[0, 1])


def test_constant_folded_weight_quantizes_like_a_traced_one():
    """Regression: with the weight a closure constant inside nested jits, XLA constant-folds
    its quantization; `jnp.signbit` of a transposed constant folded wrongly there."""
    x = jax.random.normal(jax.random.key(0), (64, 64)) * 10.0
    w = jax.random.normal(jax.random.key(1), (64, 32)) * 0.05
    inner = jax.jit(lambda b: fake_quantize_nvfp4(b.T, 1))
    folded = jax.jit(lambda x: inner(w) + 0.0 * x[:32])(x)
    traced = jax.jit(lambda b: fake_quantize_nvfp4(b.T, 1))(w)
    np.testing.assert_array_equal(np.asarray(folded), np.asarray(traced))
    y_folded = jax.jit(lambda x: fq.quantized_matmul(x, w, recipe=fq.PLAIN_NVFP4))(x)
    y_traced = jax.jit(lambda x, w: fq.quantized_matmul(x, w, recipe=fq.PLAIN_NVFP4))(x, w)
    np.testing.assert_allclose(np.asarray(y_folded), np.asarray(y_traced), rtol=1e-5, atol=1e-5)
