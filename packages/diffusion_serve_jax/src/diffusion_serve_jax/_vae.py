"""A small VAE and a latent diffusion model on its latents (the SD-style latent pipeline).

`VAE`: an 8x8 digit -> a 4x4 one-channel latent (mean in [-1, 1] via tanh, plus a log-variance)
-> an 8x8 digit. `latent_dit` is a DiT over the 4x4 latent (patch 1: 16 tokens) conditioned
on the zoo's shared condition encoder, so a latent text-to-image workflow is
`encoder -> latent_denoiser -> vae_decoder`. The latent model trains on the VAE's mean
latents with the condition encoder frozen (its outputs for the 11 labels are a fixed table).
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jaxtyping import Array, Float

from ._diffusion import Schedule, q_sample
from ._models import NULL_LABEL, DiT
from ._training import Trainer, _minibatch, make_trainer
from ._types import Images

Latents = Float[Array, "batch 4 4"]
LATENT_SHAPE = (4, 4)


class VAE(nnx.Module):
    """MLP VAE for 8x8 images: `encode -> (mean, logvar)` of 4x4 latents, `decode -> image`."""

    def __init__(self, *, hidden: int = 128, rngs: nnx.Rngs):
        self.enc1 = nnx.Linear(64, hidden, rngs=rngs)
        self.enc2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.mean = nnx.Linear(hidden, 16, rngs=rngs)
        self.logvar = nnx.Linear(hidden, 16, rngs=rngs)
        self.dec1 = nnx.Linear(16, hidden, rngs=rngs)
        self.dec2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.dec3 = nnx.Linear(hidden, 64, rngs=rngs)

    def encode(self, x: Images) -> tuple[Latents, Latents]:
        b = x.shape[0]
        h = nnx.silu(self.enc2(nnx.silu(self.enc1(x.reshape(b, 64)))))
        mean = jnp.tanh(self.mean(h)).reshape(b, *LATENT_SHAPE)
        logvar = jnp.clip(self.logvar(h), -10.0, 2.0).reshape(b, *LATENT_SHAPE)
        return mean, logvar

    def decode(self, z: Latents) -> Images:
        b = z.shape[0]
        h = nnx.silu(self.dec2(nnx.silu(self.dec1(z.reshape(b, 16)))))
        return jnp.tanh(self.dec3(h)).reshape(b, 8, 8)

    def __call__(self, x: Images, *, key: jax.Array) -> tuple[Images, Latents, Latents]:
        mean, logvar = self.encode(x)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        return self.decode(z), mean, logvar


def vae_loss(vae: VAE, images: Images, *, key: jax.Array, beta: float = 1e-3) -> Array:
    """Reconstruction MSE + beta * KL(q(z|x) || N(0, I)) per latent dimension."""
    recon, mean, logvar = vae(images, key=key)
    kl = 0.5 * jnp.mean(jnp.exp(logvar) + mean**2 - 1.0 - logvar)
    return jnp.mean((recon - images) ** 2) + beta * kl


def vae_trainer(
    graphdef, *, batch_size: int = 128, lr: float = 3e-3, beta: float = 1e-3
) -> Trainer:
    """Trainer of `VAE`; data = {"images"}."""

    def loss_fn(vae: VAE, data, key):
        kb, kz = jax.random.split(key)
        return vae_loss(vae, _minibatch(data, kb, batch_size)["images"], key=kz, beta=beta)

    return make_trainer(graphdef, loss_fn, optax.adam(lr))


def latent_dit(
    *, width: int = 32, depth: int = 2, heads: int = 2, cond_dim: int = 64, rngs: nnx.Rngs
) -> DiT:
    """A DiT over 4x4 latents (patch 1, 16 tokens) taking `cond_dim` condition vectors."""
    return DiT(
        image_size=LATENT_SHAPE[0],
        patch=1,
        width=width,
        depth=depth,
        heads=heads,
        cond_dim=cond_dim,
        rngs=rngs,
    )


def latent_diffusion_trainer(
    graphdef,
    schedule: Schedule,
    cond_table: Float[Array, "labels dim"],
    *,
    batch_size: int = 128,
    lr: float = 2e-3,
    cond_drop: float = 0.1,
) -> Trainer:
    """Trainer of a latent DiT; data = {"latents", "labels"}. `cond_table[l]` is the frozen
    condition encoder's vector for label l (row NULL_LABEL: the guidance's null condition)."""
    if cond_table.shape[0] <= NULL_LABEL:
        raise ValueError(
            f"cond_table: expected a row per label 0..{NULL_LABEL}, got {cond_table.shape}"
        )

    def loss_fn(dit: DiT, data, key):
        kb, kt, kn, kc = jax.random.split(key, 4)
        b = _minibatch(data, kb, batch_size)
        x0 = b["latents"]
        n = x0.shape[0]
        t = jax.random.randint(kt, (n,), 0, schedule.alphas_cumprod.shape[0])
        noise = jax.random.normal(kn, x0.shape)
        drop = jax.random.bernoulli(kc, cond_drop, (n,))
        c = cond_table[jnp.where(drop, NULL_LABEL, b["labels"])]
        eps = dit(q_sample(schedule, x0, t, noise), t, c)
        return jnp.mean((eps - noise) ** 2)

    opt = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, 50, 4000, lr * 0.1))
    return make_trainer(graphdef, loss_fn, optax.chain(optax.clip_by_global_norm(1.0), opt))
