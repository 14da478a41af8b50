"""Hot-Channel Patch state and the outlier statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fp4_quant as fq

HOT = jnp.array([5, 21, 44], jnp.int32)
HCP3 = fq.hot_channel_patch(3, period=2, decay=0.5, recipe=fq.PLAIN_NVFP4)
_update3 = jax.jit(HCP3.update)


def _batch(key):
    x = jax.random.normal(key, (32, 64))
    return x.at[:, HOT].multiply(50.0)


@given(st.integers(0, 2**30))
def test_hcp_state_finds_persistent_hot_channels(seed):
    w = 0.1 * jax.random.normal(jax.random.key(seed), (64, 16))
    state = HCP3.init(64)
    for i in range(3):
        state = _update3(state, _batch(jax.random.key(seed + i)), w)
    assert set(np.asarray(state.channels).tolist()) == set(np.asarray(HOT).tolist())
    assert int(state.count) == 3


def test_hcp_reselects_only_every_period():
    hcp = fq.hot_channel_patch(2, period=3, decay=0.0, recipe=fq.PLAIN_NVFP4)
    w = jnp.zeros((64, 16))
    x1 = jnp.zeros((16, 64)).at[:, 7].set(100.0).at[:, 0].set(0.3)
    x2 = jnp.zeros((16, 64)).at[:, 9].set(100.0).at[:, 1].set(0.3)
    s = hcp.update(hcp.init(64), x1, w)  # count 0: selects
    chosen = set(np.asarray(s.channels).tolist())
    s = hcp.update(s, x2, w)  # count 1: keeps
    assert set(np.asarray(s.channels).tolist()) == chosen


def test_hcp_bad_config_raises():
    with pytest.raises(ValueError, match="k:"):
        fq.hot_channel_patch(0)
    with pytest.raises(ValueError, match="period"):
        fq.hot_channel_patch(2, period=0)
    with pytest.raises(ValueError, match="decay"):
        fq.hot_channel_patch(2, decay=1.0)
    with pytest.raises(ValueError, match="num_channels"):
        fq.hot_channel_patch(8).init(4)


def test_kurtosis_gaussian_and_heavy_tail():
    g = jax.random.normal(jax.random.key(0), (200_000,))
    assert abs(float(fq.kurtosis(g)) - 3.0) < 0.1
    assert float(fq.kurtosis(_batch(jax.random.key(1)))) > 5.0


def test_channel_stats_and_top_k():
    x = _batch(jax.random.key(2))
    stats = fq.channel_stats(x)
    assert stats["max_abs"].shape == (64,)
    assert set(np.asarray(fq.top_k_channels(x, 3)).tolist()) == set(np.asarray(HOT).tolist())


def test_topk_persistence():
    sets = jnp.array([[1, 2, 3], [1, 2, 4], [1, 2, 4], [1, 2, 4]])
    p = fq.topk_persistence(sets)
    np.testing.assert_allclose(np.asarray(p["consecutive"]), [2 / 3, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(p["with_final"]), [2 / 3, 1, 1, 1], rtol=1e-6)


def test_flush_to_zero_rate_counts_underflow():
    x = jnp.full((16, 32), 1e-6).at[0, 0].set(1e3)
    assert float(fq.flush_to_zero_rate(x, fq.PLAIN_NVFP4)) > 0.9
    g = jax.random.normal(jax.random.key(0), (16, 32))
    assert float(fq.flush_to_zero_rate(g, fq.PLAIN_NVFP4)) < 0.2
