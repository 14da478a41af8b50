"""DDPM training and DDIM sampling with classifier-free guidance, as pure functions."""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array

from ._models import NULL_LABEL, ConditionEncoder, DiT, EdgeAdapter
from ._types import CondVec, Images, Labels, TimeGrid, Tokens

# the noise predictor the samplers call as dit(x, t, cond, control): a `DiT`, or a
# `SequenceParallelDiT` (its tokens split over devices), which this module cannot import
Denoiser = Callable[..., Images]


class Schedule(NamedTuple):
    """Cumulative signal level alpha_bar_t for t = 0..T-1 (cosine schedule)."""

    alphas_cumprod: TimeGrid


def make_schedule(num_timesteps: int = 100) -> Schedule:
    if num_timesteps < 2:
        raise ValueError(f"num_timesteps: expected >= 2, got {num_timesteps}")
    s = 0.008
    x = np.linspace(0, num_timesteps, num_timesteps + 1) / num_timesteps
    f = np.cos((x + s) / (1 + s) * np.pi / 2) ** 2
    ab = np.clip(f[1:] / f[0], 1e-4, 0.9999)
    return Schedule(jnp.asarray(ab, jnp.float32))


def q_sample(schedule: Schedule, x0: Images, t: Array, noise: Images) -> Images:
    ab = schedule.alphas_cumprod[t][:, None, None]
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise


def ddim_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
    """`steps` descending integer timesteps from T-1 to 0 (the sampling grid)."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps: expected 1..{num_timesteps}, got {steps}")
    return np.linspace(num_timesteps - 1, 0, steps).round().astype(np.int32)


def ddim_update(schedule: Schedule, x: Images, eps: Images, t: Array, t_prev: Array) -> Images:
    """One deterministic DDIM step from t to t_prev (t_prev < 0 means the clean image)."""
    ab = schedule.alphas_cumprod[t][:, None, None]
    ab_prev = jnp.where(t_prev >= 0, schedule.alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)
    ab_prev = ab_prev[:, None, None]
    x0 = jnp.clip((x - jnp.sqrt(1 - ab) * eps) / jnp.sqrt(ab), -1.0, 1.0)
    eps = (x - jnp.sqrt(ab) * x0) / jnp.sqrt(1 - ab)
    return jnp.sqrt(ab_prev) * x0 + jnp.sqrt(1 - ab_prev) * eps


def guided_eps(
    dit: Denoiser,
    x: Images,
    t: Array,
    cond: CondVec,
    uncond: CondVec,
    guidance: float,
    control: Tokens | None = None,
) -> Images:
    """Classifier-free guidance: eps_u + w (eps_c - eps_u), both halves in one batch."""
    b = x.shape[0]
    ctrl = None if control is None else jnp.concatenate([control, jnp.zeros_like(control)])
    eps = dit(
        jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([cond, uncond]), ctrl
    )
    eps_c, eps_u = eps[:b], eps[b:]
    return eps_u + guidance * (eps_c - eps_u)


def ddim_sample(
    dit: Denoiser,
    cond: CondVec,
    uncond: CondVec,
    noise: Images,
    *,
    schedule: Schedule,
    steps: int,
    guidance: float = 2.0,
    control: Tokens | None = None,
) -> Images:
    """Deterministic DDIM sampling from `noise` (traceable; call inside jit)."""
    ts = jnp.asarray(ddim_timesteps(schedule.alphas_cumprod.shape[0], steps))
    ts_prev = jnp.concatenate([ts[1:], jnp.array([-1], jnp.int32)])
    b = noise.shape[0]

    def body(i, x):
        t = jnp.full((b,), ts[i])
        t_prev = jnp.full((b,), ts_prev[i])
        eps = guided_eps(dit, x, t, cond, uncond, guidance, control)
        return ddim_update(schedule, x, eps, t, t_prev)

    return jax.lax.fori_loop(0, steps, body, noise)


class DiffusionModels(nnx.Module):
    """The jointly trained text-to-image trio: condition encoder, DiT, edge adapter."""

    def __init__(
        self, *, width: int = 64, depth: int = 3, heads: int = 4, patch: int = 2, rngs: nnx.Rngs
    ):
        self.encoder = ConditionEncoder(dim=width, rngs=rngs)
        self.dit = DiT(
            width=width, depth=depth, heads=heads, patch=patch, cond_dim=width, rngs=rngs
        )
        self.adapter = EdgeAdapter(width=width, patch=patch, rngs=rngs)


def diffusion_loss(
    models: DiffusionModels,
    schedule: Schedule,
    images: Images,
    labels: Labels,
    edges: Images,
    *,
    key: jax.Array,
    cond_drop: float = 0.1,
    control_drop: float = 0.5,
) -> Array:
    """Noise-prediction MSE with label dropout (for guidance) and control dropout (adapter)."""
    k_t, k_n, k_c, k_e = jax.random.split(key, 4)
    b = images.shape[0]
    t = jax.random.randint(k_t, (b,), 0, schedule.alphas_cumprod.shape[0])
    noise = jax.random.normal(k_n, images.shape)
    drop = jax.random.bernoulli(k_c, cond_drop, (b,))
    c = models.encoder(jnp.where(drop, NULL_LABEL, labels))
    use_ctrl = jax.random.bernoulli(k_e, 1 - control_drop, (b,)).astype(jnp.float32)
    control = models.adapter(edges) * use_ctrl[:, None, None]
    eps = models.dit(q_sample(schedule, images, t, noise), t, c, control)
    return jnp.mean((eps - noise) ** 2)
