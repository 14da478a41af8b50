"""The digits zoo the served workflows run: trained once (diffusion DiT, control adapter,
upscaler, classifier, VAE + latent DiT, LoRA style adapters) and checkpointed, and the
quality of what the served nodes generate."""

import importlib.util
import os
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

import diffusion_serve_jax as ds
import xplib

STYLES = {"bold": ds.bold_style}  # LoRA adapters: name -> the drawing style it learns


def load_digits():
    """`ds.load_digits_dataset()`'s arrays (the same file, the same values), read from the CSV
    that scikit-learn ships without importing scikit-learn (~3.5 s CPU of the smoke budget)."""
    pkg = importlib.util.find_spec("sklearn").submodule_search_locations[0]
    d = np.loadtxt(os.path.join(pkg, "datasets", "data", "digits.csv.gz"), delimiter=",")
    images = (d[:, :-1].reshape(-1, 8, 8).astype(np.float32) / 16.0) * 2.0 - 1.0
    return images, d[:, -1].astype(np.int32)


def zoo_config(config) -> ds.ZooConfig:
    """The experiment's model family (latent DiT workflows) from its config."""
    return ds.ZooConfig(
        width=config.width,
        depth=config.depth,
        heads=config.heads,
        num_timesteps=config.num_timesteps,
        sample_steps=config.sample_steps,
        guidance=config.guidance,
        latent=True,
        latent_width=config.latent_width,
        latent_depth=config.latent_depth,
    )


def build_zoo(config, workdir, logger):
    """Train the zoo from scratch, or restore it from the workdir's checkpoint; returns
    (zoo, images, labels, edges, seconds spent)."""
    zc = zoo_config(config)
    zoo = ds.init_zoo(zc, key=jax.random.key(config.seed, impl=config.init_prng))
    images, labels = load_digits()
    edges = ds.edge_map(images)
    modules = zoo.modules
    fresh = [
        ds.lora_init(zoo.diffusion.dit, rank=config.lora_rank, key=jax.random.key(100 + i))
        for i in range(len(config.lora_names))
    ]
    mngr = xplib.checkpoint_manager(workdir)
    target = {k: nnx.state(m) for k, m in modules.items()} | {"lora": ds.lora_stack(fresh)}
    t0 = time.perf_counter()
    if mngr.latest_step() is not None:
        restored = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(target))
        for k, m in modules.items():
            nnx.update(m, restored[k])
        zoo.lora = restored["lora"]
        logging.info("restored the zoo from step %d", mngr.latest_step())
    else:
        losses = ds.train_zoo(
            zoo,
            images,
            labels,
            edges,
            key=jax.random.key(config.seed + 1),
            diffusion_steps=config.diffusion_steps,
            aux_steps=config.aux_steps,
            batch_size=config.batch_size,
            latent_steps=config.latent_steps,
        )
        adapters = []
        for i, name in enumerate(config.lora_names):  # style adapters, base weights frozen
            styled = STYLES[name](images)
            data = {"images": styled, "labels": labels, "edges": ds.edge_map(styled)}
            tr = ds.lora_trainer(zoo.diffusion, zoo.schedule, batch_size=config.batch_size // 2)
            st, losses[f"lora_{name}"] = ds.fit(
                tr, tr.init(fresh[i]), data, config.lora_steps, key=jax.random.key(200 + i)
            )
            adapters.append(st.params)
        zoo.lora = ds.lora_stack(adapters)
        for i in xplib.progress(range(0, len(losses["diffusion"]), 25), desc="log"):
            logger.log(i, diffusion_loss=losses["diffusion"][i])
        mngr.save(
            config.diffusion_steps,
            args=ocp.args.StandardSave(
                {k: nnx.state(m) for k, m in modules.items()} | {"lora": zoo.lora}
            ),
        )
        mngr.wait_until_finished()
    return zoo, images, labels, edges, time.perf_counter() - t0


def evaluate_quality(zoo, executors, images, labels, edges, n):
    """Conditioning accuracy and classifier-Frechet distance of served generations."""
    lab = np.arange(n, dtype=np.int32) % 10
    enc = executors["encoder"].run({"label": lab})
    gen = executors["denoiser"].run(enc | {"seed": np.arange(n, dtype=np.int32)})["image"]
    ctrl_idx = np.arange(n) % len(images)
    control = executors["edge_adapter"].run({"edges": edges[ctrl_idx]})["control"]
    enc_c = executors["encoder"].run({"label": labels[ctrl_idx]})
    gen_c = executors["denoiser_ctrl"].run(
        enc_c | {"seed": np.arange(n, dtype=np.int32), "control": control}
    )["image"]
    lat = executors["latent_denoiser"].run(enc | {"seed": np.arange(n, dtype=np.int32)})
    gen_l = executors["vae_decoder"].run(lat)["image"]
    lora_idx = np.zeros(n, np.int32)  # adapter 0 ("bold")
    gen_lora = executors["denoiser_lora"].run(
        enc | {"seed": np.arange(n, dtype=np.int32), "lora": lora_idx}
    )["image"]
    clf = zoo.classifier

    def ink(x):  # mean stroke mass in [0, 1]: the bold style raises it
        return float(np.mean((np.asarray(x) + 1) / 2))

    return {
        "cond_acc_latent": ds.conditioning_accuracy(clf, gen_l, lab),
        "frechet_latent": ds.classifier_frechet(clf, gen_l, images),
        "cond_acc_lora": ds.conditioning_accuracy(clf, gen_lora, lab),
        "ink": {
            "real": ink(images),
            "real_bold": ink(ds.bold_style(images)),
            "t2i": ink(gen),
            "t2i_lora": ink(gen_lora),
        },
        "samples_latent": gen_l[:10],
        "samples_lora": gen_lora[:10],
        "cond_acc": ds.conditioning_accuracy(clf, gen, lab),
        "cond_acc_control": ds.conditioning_accuracy(clf, gen_c, labels[ctrl_idx]),
        "real_acc": ds.conditioning_accuracy(clf, images, labels),
        "frechet": ds.classifier_frechet(clf, gen, images),
        "frechet_noise": ds.classifier_frechet(
            clf, np.clip(np.random.default_rng(0).normal(size=(n, 8, 8)), -1, 1), images
        ),
        "samples": gen[:20],
    }
