"""The VAE and the latent text-to-image workflow: shapes and bounds, training (grad through
the VAE loss under jit) lowers the loss,
and `t2i_latent` served by the runtime equals encoder -> latent DDIM -> VAE decode by hand."""

import asyncio

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffusion_serve_jax import (
    VAE,
    Catalog,
    ServingRuntime,
    ZooConfig,
    ddim_sample,
    fit,
    init_zoo,
    latent_diffusion_trainer,
    load_digits_dataset,
    make_schedule,
    sample_noise,
    vae_trainer,
    zoo_catalog,
)
from testkit import assert_trees_close


def test_vae_shapes_bounds_grad_and_training_lowers_the_loss():
    images, _ = load_digits_dataset()
    vae = VAE(hidden=32, rngs=nnx.Rngs(0))
    gd, params = nnx.split(vae)
    x = jnp.asarray(images[:5])
    mean, logvar = jax.jit(lambda p: nnx.merge(gd, p).encode(x))(params)
    assert mean.shape == logvar.shape == (5, 4, 4)
    assert float(jnp.max(jnp.abs(mean))) <= 1.0
    tr = vae_trainer(gd, batch_size=64, lr=1e-2)
    state, losses = fit(
        tr, tr.init(params), {"images": jnp.asarray(images)}, 60, key=jax.random.key(2)
    )
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    recon = jax.jit(lambda p: nnx.merge(gd, p).decode(nnx.merge(gd, p).encode(x)[0]))(state.params)
    assert recon.shape == (5, 8, 8) and float(jnp.max(jnp.abs(recon))) <= 1.0


def test_latent_trainer_rejects_a_short_condition_table():
    with pytest.raises(ValueError, match="cond_table"):
        latent_diffusion_trainer(None, make_schedule(10), jnp.zeros((5, 16)))


def test_latent_workflow_served_equals_the_pipeline_by_hand():
    cfg = ZooConfig(
        width=16,
        depth=1,
        heads=2,
        num_timesteps=10,
        sample_steps=2,
        latent=True,
        latent_width=16,
        latent_depth=1,
    )
    zoo = init_zoo(cfg, key=jax.random.key(0))
    nnx.update(  # non-zero output layers, so the latent DiT's prediction matters
        zoo.latent_dit,
        jax.tree.map(lambda a: a + 0.1, nnx.state(zoo.latent_dit)),
    )
    full = zoo_catalog(zoo)
    cat = Catalog()  # only the latent workflow's models, so nothing else compiles
    for m in ("encoder", "latent_denoiser", "vae_decoder"):
        cat.register_model(full.models[m])
    cat.register_workflow(full.workflows["t2i_latent"].workflow)
    assert cat.workflows["t2i_latent"].order == ("enc", "gen", "dec")
    labels, seeds = np.array([3, 7, 1], np.int32), np.array([0, 5, 9], np.int32)

    async def serve():
        rt = ServingRuntime(cat, num_workers=2, buckets=(4,), max_batch=4)
        await rt.start()
        reqs = [
            rt.submit("t2i_latent", {"label": int(a), "seed": int(b)})
            for a, b in zip(labels, seeds, strict=True)
        ]
        outs = await asyncio.gather(*(r.future for r in reqs))
        await rt.stop()
        return np.stack([o["image"] for o in outs])

    got = asyncio.run(serve())
    e_gd, e_p = nnx.split(zoo.diffusion.encoder)
    l_gd, l_p = nnx.split(zoo.latent_dit)
    v_gd, v_p = nnx.split(zoo.vae)

    @jax.jit
    def by_hand(e_p, l_p, v_p):
        enc = nnx.merge(e_gd, e_p)
        z = ddim_sample(
            nnx.merge(l_gd, l_p),
            enc(jnp.asarray(labels)),
            enc(jnp.full((3,), 10)),
            sample_noise(jnp.asarray(seeds), (4, 4)),
            schedule=zoo.schedule,
            steps=cfg.sample_steps,
            guidance=cfg.guidance,
        )
        return nnx.merge(v_gd, v_p).decode(z)

    want = by_hand(e_p, l_p, v_p)
    assert got.shape == (3, 8, 8)
    assert_trees_close(got, np.asarray(want), rtol=1e-5, atol=1e-5)
