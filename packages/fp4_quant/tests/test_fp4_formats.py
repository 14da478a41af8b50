"""NVFP4 / MXFP4 formats: rounding, codes, packing, scales, NaN/inf policy, input errors."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fp4_quant as fq
from fp4_quant._e2m1 import uniform_bits

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)
small = st.floats(-8.0, 8.0, allow_nan=False, width=32)
mat = hnp.arrays(np.float32, (32, 32), elements=finite)


@jax.jit
def _round_both(v):
    ours = fq.round_to_e2m1(v)
    cast = v.astype(jnp.float4_e2m1fn).astype(jnp.float32)
    return ours, cast


@given(hnp.arrays(np.float32, (64,), elements=small))
def test_nearest_rounding_matches_xla_e2m1_cast(v):
    ours, cast = _round_both(jnp.asarray(v))
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(cast))


def test_ties_round_to_even_and_saturate():
    v = jnp.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, -100.0])
    expected = [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, -6.0]
    np.testing.assert_array_equal(np.asarray(fq.round_to_e2m1(v)), expected)


def test_stochastic_rounding_is_unbiased_and_on_grid():
    v = jnp.full((200_000,), 2.6)
    q = jax.jit(lambda v, k: fq.round_to_e2m1(v, rounding="stochastic", key=k))(
        v, jax.random.key(3)
    )
    assert set(np.unique(np.asarray(q)).tolist()) == {2.0, 3.0}
    assert abs(float(q.mean()) - 2.6) < 0.01


def test_uniform_bits_in_unit_interval_and_key_dependent():
    a = uniform_bits(jax.random.key(0), (1000,))
    b = uniform_bits(jax.random.key(1), (1000,))
    assert float(a.min()) >= 0.0 and float(a.max()) < 1.0
    assert abs(float(a.mean()) - 0.5) < 0.05
    assert not np.array_equal(np.asarray(a), np.asarray(b))


@given(hnp.arrays(np.uint8, (8, 32), elements=st.integers(0, 15)))
def test_pack_unpack_round_trip_is_exact(codes):
    packed = fq.pack_e2m1(jnp.asarray(codes))
    assert packed.shape == (8, 16) and packed.dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(fq.unpack_e2m1(packed)), codes)


def test_encode_decode_all_codes():
    values = jnp.array(fq.E2M1_VALUES + tuple(-v for v in fq.E2M1_VALUES))
    codes = fq.e2m1_encode(values)
    np.testing.assert_array_equal(np.asarray(codes), np.arange(16))
    np.testing.assert_array_equal(np.asarray(fq.e2m1_decode(codes)), np.asarray(values))


@jax.jit
def _nv_paths(x):
    t = fq.nvfp4_quantize(x)
    t2 = fq.nvfp4_quantize(x, block="16x16")
    return (
        fq.nvfp4_dequantize(t),
        fq.nvfp4_fake_quantize(x),
        fq.nvfp4_dequantize(t2),
        fq.nvfp4_fake_quantize(x, block="16x16"),
    )


def _nvfp4_numpy(x, block_rows=1):
    """Plain NumPy reference of NVIDIA's two-level NVFP4 scaling (nearest rounding)."""
    x = np.asarray(x, np.float64)
    amax = np.abs(x).max()
    ts = np.float32(amax / 2688.0) if amax > 0 else np.float32(1.0)
    r, c = x.shape
    xb = x.reshape(r // block_rows, block_rows, c // 16, 16)
    bamax = np.abs(xb).max(axis=(1, 3), keepdims=True)
    bs = np.asarray(
        jnp.asarray(np.clip(bamax / 6 / ts, 0, 448), jnp.float32).astype(jnp.float8_e4m3fn),
        np.float64,
    )
    d = bs * ts
    v = np.where(d > 0, xb / np.where(d > 0, d, 1), 0)
    q = np.asarray(jnp.asarray(v, jnp.float32).astype(jnp.float4_e2m1fn), np.float64)
    return (q * d).reshape(r, c)


@given(mat)
def test_packed_round_trip_equals_fake_quant_and_numpy_reference(x):
    deq, fake, deq2, fake2 = _nv_paths(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(deq), np.asarray(fake), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(deq2), np.asarray(fake2), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(deq), _nvfp4_numpy(x), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(np.asarray(deq2), _nvfp4_numpy(x, 16), rtol=1e-6, atol=1e-30)


@given(mat)
def test_quantization_error_bounded_by_block_scale(x):
    x = jnp.asarray(x)
    t = fq.nvfp4_quantize(x)
    err = np.abs(np.asarray(fq.nvfp4_dequantize(t)) - np.asarray(x)).reshape(32, 2, 16)
    d = np.asarray(t.block_scale.astype(jnp.float32) * t.tensor_scale)[..., None]
    bamax = np.abs(np.asarray(x)).reshape(32, 2, 16).max(-1, keepdims=True)
    # Half a grid step at the top of the range (1 * d), plus saturation when the E4M3-rounded
    # scale ended below bamax / 6 (flush-to-zero blocks, d = 0, lose everything: err = |x|).
    bound = d * 1.0 + np.maximum(bamax - 6.0 * d, 0.0)
    assert np.all(err <= bound * (1 + 1e-6) + 1e-37)


@given(hnp.arrays(np.float32, (32, 32), elements=small))
def test_16x16_blocks_are_transpose_symmetric(x):
    x = jnp.asarray(x)
    a = fq.nvfp4_fake_quantize(x, block="16x16")
    b = fq.nvfp4_fake_quantize(x.T, block="16x16").T
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_packed_memory_is_under_029_of_bf16():
    x = jnp.ones((256, 512))
    for block in ("1x16", "16x16"):
        t = fq.nvfp4_quantize(x, block=block)
        assert t.nbytes / (x.size * 2) <= 0.29
    m = fq.mxfp4_quantize(x)
    assert m.nbytes / (x.size * 2) <= 0.27


@given(mat)
def test_mxfp4_scales_are_powers_of_two_and_round_trip(x):
    x = jnp.asarray(x)
    t = fq.mxfp4_quantize(x)
    s = np.asarray(t.block_scale.astype(jnp.float32))
    np.testing.assert_array_equal(np.log2(s), np.round(np.log2(s)))
    np.testing.assert_array_equal(
        np.asarray(fq.mxfp4_dequantize(t)), np.asarray(fq.mxfp4_fake_quantize(x))
    )


def test_nvfp4_beats_mxfp4_on_gaussian_data():
    x = jax.random.normal(jax.random.key(0), (256, 256))
    e_nv = jnp.linalg.norm(fq.nvfp4_fake_quantize(x) - x)
    e_mx = jnp.linalg.norm(fq.mxfp4_fake_quantize(x) - x)
    assert float(e_nv) < float(e_mx)


def test_stochastic_quantize_needs_key_and_depends_on_it():
    x = jax.random.normal(jax.random.key(0), (16, 32))
    a = fq.nvfp4_fake_quantize(x, rounding="stochastic", key=jax.random.key(1))
    b = fq.nvfp4_fake_quantize(x, rounding="stochastic", key=jax.random.key(2))
    assert not np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="key"):
        fq.nvfp4_quantize(x, rounding="stochastic")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_values_poison_their_block_not_hidden(bad):
    x = jax.random.normal(jax.random.key(0), (16, 64)).at[3, 20].set(bad)
    t = fq.nvfp4_quantize(x)
    deq = np.asarray(fq.nvfp4_dequantize(t))
    assert int(fq.nonfinite_blocks(t)) == 1
    assert np.all(np.isnan(deq[3, 16:32]))
    assert int(np.isnan(deq).sum()) == 16
    clean = fq.nvfp4_fake_quantize(x.at[3, 16:32].set(0.0))
    np.testing.assert_array_equal(np.delete(deq, 3, 0), np.delete(np.asarray(clean), 3, 0))
    assert np.isnan(np.asarray(fq.mxfp4_fake_quantize(x))[3, 20])
    with pytest.raises(ValueError, match="x: expected finite values"):
        fq.check_finite(x, "x")


@pytest.mark.shape_checks_off  # the library's own error, not jaxtyping's
def test_bad_inputs_raise_named_errors():
    x = jnp.ones((16, 32))
    with pytest.raises(ValueError, match="x: the last"):
        fq.nvfp4_quantize(jnp.ones((16, 24)))
    with pytest.raises(ValueError, match="x: expected a 2-D"):
        fq.nvfp4_quantize(jnp.ones((32,)))
    with pytest.raises(TypeError, match="x: expected a floating"):
        fq.nvfp4_quantize(jnp.ones((16, 32), jnp.int32))
    with pytest.raises(ValueError, match="x: expected a non-empty"):
        fq.nvfp4_quantize(jnp.ones((0, 32)))
    with pytest.raises(ValueError, match="block"):
        fq.nvfp4_quantize(x, block="4x4")
    with pytest.raises(ValueError, match="rows for 16x16"):
        fq.nvfp4_quantize(jnp.ones((8, 32)), block="16x16")
    with pytest.raises(ValueError, match="rounding"):
        fq.nvfp4_quantize(x, rounding="up")
    with pytest.raises(ValueError, match="x: the last"):
        fq.mxfp4_quantize(jnp.ones((4, 16)))


def test_hadamard_is_orthogonal_and_preserves_products():
    h = fq.random_hadamard_matrix(key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(h @ h.T), np.eye(16), atol=1e-6)
    a = jax.random.normal(jax.random.key(1), (8, 64))
    b = jax.random.normal(jax.random.key(2), (4, 64))
    np.testing.assert_allclose(
        np.asarray(fq.apply_rht(a, h) @ fq.apply_rht(b, h).T), np.asarray(a @ b.T), atol=1e-4
    )
    with pytest.raises(ValueError, match="power of two"):
        fq.hadamard_matrix(12)
