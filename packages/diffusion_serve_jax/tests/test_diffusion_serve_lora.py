"""LoRA style adapters: merge algebra, a fresh adapter is the identity, training moves only the
adapter, and the zoo's multi-adapter node equals sampling with each row's merged weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from diffusion_serve_jax import (
    LORA_LAYERS,
    DiffusionModels,
    DiT,
    NodeExecutor,
    ZooConfig,
    bold_style,
    ddim_sample,
    init_zoo,
    load_digits_dataset,
    lora_init,
    lora_merge,
    lora_module,
    lora_rows_module,
    lora_stack,
    lora_trainer,
    make_schedule,
    sample_noise,
    zoo_catalog,
)
from testkit import assert_trees_close

SCHED = make_schedule(10)


def _perturb(module):
    """Give the zero-initialised output/modulation layers weights so outputs depend on them
    (drawn with numpy: an eager JAX draw compiles a program per shape)."""
    rng = np.random.default_rng(5)
    state = jax.tree.map(
        lambda a: np.asarray(a) + np.float32(0.1) * rng.standard_normal(a.shape, np.float32),
        nnx.state(module),
    )
    nnx.update(module, jax.device_put(state))


def _random_models(width=16, depth=2, heads=2):
    """`DiffusionModels` with every parameter drawn on the host (no zero layers), built
    abstractly: eager initialisation compiles a random-number program per parameter."""
    models = nnx.eval_shape(
        lambda: DiffusionModels(width=width, depth=depth, heads=heads, rngs=nnx.Rngs(0))
    )
    rng = np.random.default_rng(5)
    state = jax.tree.map(
        lambda a: np.float32(0.1) * rng.standard_normal(a.shape, np.float32), nnx.state(models)
    )
    nnx.update(models, jax.device_put(state))
    return models


def _randomise_b(adapter, seed):
    rng = np.random.default_rng(seed)
    return jax.device_put(
        {
            k: {"a": v["a"], "b": np.float32(0.3) * rng.standard_normal(v["b"].shape, np.float32)}
            for k, v in adapter.items()
        }
    )


def test_lora_merge_algebra_and_fresh_adapter_is_identity():
    models = _random_models()
    gd, state = nnx.split(models.dit)
    fresh = lora_init(models.dit, rank=2, key=jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (2, 8, 8))
    t, c = jnp.array([3, 7]), jax.random.normal(jax.random.key(3), (2, 16))
    base = jax.jit(lambda s: nnx.merge(gd, s)(x, t, c))(state)
    with_lora = jax.jit(lambda s, a: lora_module(gd, s, a)(x, t, c))
    assert_trees_close(with_lora(state, fresh), base, rtol=0, atol=1e-6)
    adapter = _randomise_b(fresh, 4)
    merged = lora_merge(nnx.to_pure_dict(state), adapter, scale=0.5)
    w = nnx.to_pure_dict(state)["blocks"][1]["proj"]["kernel"]
    ab = adapter["1.proj"]
    np.testing.assert_allclose(
        merged["blocks"][1]["proj"]["kernel"], w + 0.5 * ab["a"] @ ab["b"], rtol=1e-6
    )
    assert np.abs(np.asarray(with_lora(state, adapter) - base)).max() > 1e-3
    with pytest.raises(ValueError, match="rank"):
        lora_init(models.dit, rank=0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="adapters"):
        lora_stack([])


def test_lora_training_moves_only_the_adapter():
    models = _random_models()  # a zero output layer would pass no gradient to the adapter
    before = jax.tree.map(np.asarray, nnx.state(models))
    images, labels = load_digits_dataset()
    bold = bold_style(images[:64])
    assert np.all(bold >= images[:64]) and bold.mean() > images[:64].mean()
    data = {
        "images": jnp.asarray(bold),
        "labels": jnp.asarray(labels[:64]),
        "edges": jnp.zeros_like(jnp.asarray(bold)),
    }
    tr = lora_trainer(models, SCHED, batch_size=16)
    st = tr.init(lora_init(models.dit, rank=2, key=jax.random.key(1)))
    for i in range(3):
        st, loss = tr.update(st, data, key=jax.random.key(i))
        assert np.isfinite(float(loss))
    assert max(float(jnp.abs(v["b"]).max()) for v in st.params.values()) > 0
    assert_trees_close(jax.tree.map(np.asarray, nnx.state(models)), before, rtol=0, atol=0)


def test_zoo_lora_node_picks_each_rows_adapter():
    cfg = ZooConfig(width=16, depth=1, heads=2, num_timesteps=10, sample_steps=2)
    zoo = init_zoo(cfg, key=jax.random.key(0))
    _perturb(zoo.diffusion.dit)
    adapters = [
        _randomise_b(lora_init(zoo.diffusion.dit, rank=2, key=jax.random.key(i)), 10 + i)
        for i in range(2)
    ]
    zoo.lora = lora_stack(adapters)
    cat = zoo_catalog(zoo)
    assert "t2i_lora" in cat.workflows and "denoiser_lora" in cat.models
    ex = NodeExecutor(cat.models["denoiser_lora"], buckets=(2,))
    cond = jax.random.normal(jax.random.key(5), (2, 16))
    uncond = jnp.zeros((2, 16))
    seeds = np.array([3, 4], np.int32)
    batch = {"cond": np.asarray(cond), "uncond": np.asarray(uncond), "seed": seeds}
    got = ex.run(batch | {"lora": np.array([1, 0], np.int32)})["image"]
    gd, state = nnx.split(zoo.diffusion.dit)
    noise = sample_noise(jnp.asarray(seeds), (8, 8))

    @jax.jit
    def reference(adapter, c, u, n):  # one row, its adapter merged by hand
        dit = lora_module(gd, state, adapter)
        return ddim_sample(dit, c, u, n, schedule=zoo.schedule, steps=2, guidance=cfg.guidance)

    for row, idx in enumerate((1, 0)):
        sl = slice(row, row + 1)
        want = reference(adapters[idx], cond[sl], uncond[sl], noise[sl])
        np.testing.assert_allclose(got[row], np.asarray(want[0]), atol=1e-5)
    assert np.abs(got[0] - got[1]).max() > 1e-3


_ROWS = {}


def _rows_setup():
    """A tiny DiT with three random adapters (built once: hypothesis draws only indices)."""
    if not _ROWS:
        # random weights drawn on the host for an abstract DiT: eager JAX init compiles per op
        dit = nnx.eval_shape(lambda: DiT(width=8, depth=1, heads=1, cond_dim=8, rngs=nnx.Rngs(0)))
        gd, state = nnx.split(dit)
        rng = np.random.default_rng(0)
        state = jax.tree.map(
            lambda a: np.float32(0.3) * rng.standard_normal(a.shape, np.float32), state
        )
        stack = {}
        for name in LORA_LAYERS:
            k_in, k_out = getattr(dit.blocks[0], name).kernel.shape
            stack[f"0.{name}"] = {
                "a": rng.standard_normal((3, k_in, 2), np.float32) / np.sqrt(k_in),
                "b": np.float32(0.3) * rng.standard_normal((3, 2, k_out), np.float32),
            }
        state, stack = jax.device_put((state, stack))  # jax arrays, also when closed over
        x = rng.standard_normal((4, 8, 8), np.float32)
        t, c = np.array([3, 7, 1, 9]), rng.standard_normal((4, 8), np.float32)

        def reference(state, stack, idx):  # merge each row's adapter into a full kernel
            def one(i, x, t, c):
                adapter = jax.tree.map(lambda a: a[i], stack)
                return lora_module(gd, state, adapter, scale=0.5)(x[None], t[None], c[None])[0]

            return jax.vmap(one)(idx, x, t, c)

        def rows(state, stack, idx):  # shared base matmul + per-row low-rank update
            return lora_rows_module(gd, state, stack, idx, scale=0.5)(x, t, c)

        _ROWS.update(
            state=state, stack=stack, ref=jax.jit(reference), rows=jax.jit(rows), raw=rows, gd=gd
        )
    return _ROWS


@given(st.lists(st.integers(0, 2), min_size=4, max_size=4))
def test_lora_rows_module_equals_merging_each_rows_adapter(idx):
    s = _rows_setup()
    idx = np.asarray(idx, np.int32)  # host-side checks: eager jnp ops would each compile
    want = np.asarray(s["ref"](s["state"], s["stack"], idx))
    got = np.asarray(s["rows"](s["state"], s["stack"], idx))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # each row really uses its own adapter: row 0 with another adapter gives another output
    other = idx.copy()
    other[0] = (idx[0] + 1) % 3
    moved = np.asarray(s["rows"](s["state"], s["stack"], other))
    assert np.abs(moved[0] - want[0]).max() > 1e-3
    np.testing.assert_allclose(moved[1:], want[1:], rtol=1e-5, atol=1e-5)


def test_lora_rows_module_grad_reaches_only_the_adapters_in_use_and_checks_shapes():
    s = _rows_setup()
    idx = np.array([2, 0, 2, 0], np.int32)  # adapter 1 unused
    grad = jax.jit(jax.grad(lambda stack: jnp.sum(s["raw"](s["state"], stack, idx) ** 2)))
    g = jax.tree.map(np.asarray, grad(s["stack"]))
    assert set(g) == {"0.qkv", "0.proj"}
    for layer, ab in g.items():
        for name, x in ab.items():
            assert np.abs(x[1]).max() == 0.0, (layer, name)
            assert np.abs(x[0]).max() > 0 and np.abs(x[2]).max() > 0
    bad = jax.tree.map(lambda a: a[:, :-1] if a.shape[-1] == 2 else a, g)  # a: 7 inputs
    with pytest.raises(ValueError, match="expects kernels with 7 inputs"):
        s["raw"](s["state"], bad, idx)
