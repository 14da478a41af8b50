"""Pallas kernels in interpret mode against their jnp references."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fp4_quant as fq

vals = hnp.arrays(np.float32, (32, 64), elements=st.floats(-100, 100, width=32))


class TestQuantizeKernel:
    @pytest.mark.parametrize("block_rows", [1, 16])
    @settings(max_examples=5)
    @given(x=vals)
    def test_interpret_matches_reference(self, block_rows, x):
        x = jnp.asarray(x)
        got = fq.nvfp4_quantize_pallas(
            x, block_rows=block_rows, tile_rows=16, tile_cols=32, interpret=True
        )
        ref = fq.nvfp4_quantize_reference(x, block_rows=block_rows)
        np.testing.assert_array_equal(np.asarray(got.codes), np.asarray(ref.codes))
        np.testing.assert_array_equal(
            np.asarray(got.block_scale.astype(jnp.float32)),
            np.asarray(ref.block_scale.astype(jnp.float32)),
        )
        block = "16x16" if block_rows == 16 else "1x16"
        np.testing.assert_allclose(
            np.asarray(fq.nvfp4_dequantize(got)),
            np.asarray(fq.nvfp4_fake_quantize(x, block=block)),
            rtol=1e-6,
        )

    def test_bad_tiles_raise(self):
        with pytest.raises(ValueError, match="tile_cols"):
            fq.nvfp4_quantize_pallas(jnp.ones((16, 64)), tile_cols=24, interpret=True)
        with pytest.raises(ValueError, match="x: rows"):
            fq.nvfp4_quantize_pallas(jnp.ones((24, 64)), tile_rows=16, interpret=True)


class TestHCPMatmulKernel:
    def _operands(self, seed):
        kx, kw = jax.random.split(jax.random.key(seed))
        x = jax.random.normal(kx, (32, 64)).at[:, 5].multiply(40.0)
        w = 0.1 * jax.random.normal(kw, (64, 32))
        return x, w

    @settings(max_examples=5)
    @given(st.integers(0, 2**30))
    def test_interpret_matches_reference_and_quantized_matmul(self, seed):
        x, w = self._operands(seed)
        ch = jnp.array([5, 9], jnp.int32)
        xt, wt = fq.nvfp4_quantize(x), fq.nvfp4_quantize(w.T, block="16x16")
        xq, wq = fq.nvfp4_dequantize(xt), fq.nvfp4_dequantize(wt).T
        x_patch = jnp.concatenate([(x - xq)[:, ch], xq[:, ch]], 1)
        w_patch = jnp.concatenate([wq[ch], (w - wq)[ch]], 0).T
        got = fq.hcp_matmul_pallas(xt, wt, x_patch, w_patch, tile_k=32, interpret=True)  # 2 chunks
        ref = fq.hcp_matmul_reference(xt, wt, x_patch, w_patch)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-4)
        recipe = fq.MatmulRecipe("nvfp4", weight_2d=True, sr_grad=False, rht_wgrad=False)
        y = fq.quantized_matmul(x, w, recipe=recipe, hot_channels=ch)
        np.testing.assert_allclose(np.asarray(got), np.asarray(y), rtol=1e-5, atol=1e-4)

    @pytest.mark.shape_checks_off  # the library's own error, not jaxtyping's
    def test_bad_patch_shapes_raise(self):
        x, w = self._operands(0)
        xt, wt = fq.nvfp4_quantize(x), fq.nvfp4_quantize(w.T)
        with pytest.raises(ValueError, match="x_patch/w_patch"):
            fq.hcp_matmul_pallas(xt, wt, jnp.ones((32, 4)), jnp.ones((32, 2)), interpret=True)


def test_quantize_kernel_matches_reference_on_special_blocks():
    x = np.asarray(jax.random.normal(jax.random.key(0), (32, 64))) * 30.0
    x[0, 3], x[1, 17], x[2, 40] = np.nan, np.inf, -np.inf  # poisoned blocks -> NaN scales
    x[3, :16], x[4, 16:32], x[5, 0] = 0.0, 1e-30, -0.0
    for block_rows in (1, 16):
        got = fq.nvfp4_quantize_pallas(jnp.asarray(x), block_rows=block_rows, interpret=True)
        ref = fq.nvfp4_quantize_reference(jnp.asarray(x), block_rows=block_rows)
        np.testing.assert_array_equal(np.asarray(got.codes), np.asarray(ref.codes))
        np.testing.assert_array_equal(
            np.asarray(got.block_scale.astype(jnp.float32)),
            np.asarray(ref.block_scale.astype(jnp.float32)),
        )
        assert float(got.tensor_scale) == float(ref.tensor_scale)


def test_gpu_block_shape_rules_are_checked_before_lowering():
    """interpret=False validates the Triton constraints on the host (so this runs on CPU)."""
    with pytest.raises(ValueError, match="power-of-two"):
        fq.nvfp4_quantize_pallas(jnp.ones((16, 96)), tile_cols=96, interpret=False)
    x, w = jnp.ones((32, 48)), jnp.ones((48, 32))
    xt, wt = fq.nvfp4_quantize(x), fq.nvfp4_quantize(w.T)
    with pytest.raises(ValueError, match="power-of-two"):
        fq.hcp_matmul_pallas(xt, wt, jnp.ones((32, 2)), jnp.ones((32, 2)), interpret=False)
    x, w = jnp.ones((32, 64)), jnp.ones((64, 32))
    xt, wt = fq.nvfp4_quantize(x), fq.nvfp4_quantize(w.T)
    with pytest.raises(ValueError, match="dot dimensions"):
        fq.hcp_matmul_pallas(
            xt, wt, jnp.ones((32, 2)), jnp.ones((32, 2)), tile_m=8, tile_n=16, interpret=False
        )
