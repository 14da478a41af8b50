"""Field-strength simulation: a 1 mm template slice -> a 1.5T-like acquisition + guidance maps.

The 1.5T -> 7T distillation paper conditions its diffusion model on the low-field image and on
the scanner's correction data (bias-field correction and gradient-nonlinearity correction). No
paired scans ship offline, so both are simulated from the template with the package's
degradation building blocks (`_degrade`), in the same order and with the same key splits as
`degrade`: reduced grey/white contrast -> radial gradient-nonlinearity warp -> multiplicative bias
field -> resolution loss -> Rician noise. Unlike `degrade`, the scale may be any real factor
(x2.5 is the "unseen" scale of the multi-scale student), and the two correction maps come back
as guidance channels: log bias field and signed radial displacement (pixels).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._degrade import bias_field, gaussian_blur, radial_warp, upsample
from ._types import Array, Channels, CondChannels, Float, Image, Key, LowSlice, Slice

GUIDANCE = ("log_bias", "radial_displacement")


class FieldSimConfig(NamedTuple):
    """A low-field acquisition: real-valued `scale`, noise, bias, warp and contrast loss."""

    scale: float = 4.0
    noise_sigma: float = 0.02  # Rician noise std relative to the image maximum (1.0)
    bias_strength: float = 0.2  # std of the log bias field's polynomial coefficients
    warp_strength: float = 0.03  # |k| <= warp_strength in r' = r (1 + k r^2)
    contrast_reduction: float = 0.3  # fraction of the GM/WM contrast removed, in [0, 1)


class LowField(NamedTuple):
    lr: Float[Array, "batch low_height low_width"]  # (b, round(h / scale), round(w / scale))
    hr: Image  # (b, h, w) clean 1 mm target
    bias: Image  # (b, h, w) multiplicative bias field applied (positive, unit geometric mean)
    displacement: Image  # (b, h, w) signed radial displacement of the warp, pixels
    warp_k: Array  # (b,) the warp coefficient drawn per slice


def lowres_shape(shape: tuple[int, int], scale: float) -> tuple[int, int]:
    """LR grid of an HR `shape` at a real `scale`: round(n / scale) pixels per axis."""
    return tuple(max(int(round(n / scale)), 1) for n in shape)


def lowres(image: Slice, scale: float) -> LowSlice:
    """Blur with FWHM = scale pixels, then resample onto the LR grid (any real scale).

    For an integer scale dividing the shape this is exactly `blur_decimate`.
    """
    if scale == 1:
        return image
    blurred = gaussian_blur(image, scale / 2.3548)
    return jax.image.resize(blurred, lowres_shape(image.shape, scale), "linear", antialias=False)


def radial_displacement(shape: tuple[int, int], k: Array) -> Slice:
    """Signed radial displacement (pixels) of `radial_warp` with coefficient k: k r^3 rmax.

    Positive: the pixel shows tissue from further out. Its magnitude is the map `radial_warp`
    returns; the sign is the part a magnitude map loses.
    """
    h, w = shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    rmax = max(cy, cx)
    ii, jj = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )
    r2 = ((ii - cy) / rmax) ** 2 + ((jj - cx) / rmax) ** 2
    return k * r2 * jnp.sqrt(r2) * rmax


def radial_unwarp(image: Slice, k: Array, *, iterations: int = 8) -> Slice:
    """Gradient-nonlinearity correction: the inverse of `radial_warp(., k)`.

    `radial_warp` shows the source point p (1 + k |p|^2) at p; the inverse shows at q the warped
    image at p with p (1 + k |p|^2) = q, solved by the fixed-point iteration
    rho <- |q| / (1 + k rho^2) (a contraction for |k| < 1 / 6 on the unit disc).
    """
    h, w = image.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    rmax = max(cy, cx)
    ii, jj = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )
    qy, qx = (ii - cy) / rmax, (jj - cx) / rmax
    q = jnp.sqrt(qy**2 + qx**2)
    rho = q
    for _ in range(iterations):
        rho = q / (1.0 + k * rho**2)
    ratio = jnp.where(q > 0, rho / jnp.maximum(q, 1e-12), 1.0)
    sy, sx = cy + qy * ratio * rmax, cx + qx * ratio * rmax
    # "nearest": a barrel warp pulled the corners out of the field of view; repeat the edge
    return jax.scipy.ndimage.map_coordinates(image, [sy, sx], order=1, mode="nearest")


def validate_fieldsim(config: FieldSimConfig, shape: tuple[int, ...]) -> None:
    """Host-side checks before tracing; `shape` is the batch shape (b, h, w)."""
    if not 1.0 <= float(config.scale) <= 8.0:
        raise ValueError(f"scale: expected a real factor in [1, 8], got {config.scale}")
    for name in ("noise_sigma", "bias_strength", "warp_strength"):
        if not getattr(config, name) >= 0:
            raise ValueError(f"{name}: expected >= 0, got {getattr(config, name)}")
    if config.warp_strength >= 1 / 6:
        raise ValueError(
            f"warp_strength: expected < 1/6 (invertible warp), got {config.warp_strength}"
        )
    if not 0.0 <= config.contrast_reduction < 1.0:
        raise ValueError(f"contrast_reduction: expected in [0, 1), got {config.contrast_reduction}")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"hr: expected a non-empty (batch, height, width) stack, got {shape}")
    if min(shape[1:]) < 4 * float(config.scale):
        raise ValueError(f"hr: slices {shape[1:]} are too small for scale {config.scale}")


def _simulate_one(hr, gm, wm, strengths, key, scale, noisy):
    noise_sigma, bias_strength, warp_strength, contrast = strengths
    kb, kw, kn = jax.random.split(key, 3)  # the same split as `degrade`
    x = hr - 0.5 * contrast * _contrast_diff(hr, gm, wm) * (wm - gm)  # = reduce_contrast
    k = warp_strength * jax.random.uniform(kw, (), minval=-1.0, maxval=1.0)
    x, _ = radial_warp(x, k)
    bias = bias_field(kb, hr.shape, bias_strength)
    lr = lowres(x * bias, scale)
    if noisy:  # = rician(lr, noise_sigma, key=kn) with a traced sigma
        k1, k2 = jax.random.split(kn)
        n1 = noise_sigma * jax.random.normal(k1, lr.shape)
        n2 = noise_sigma * jax.random.normal(k2, lr.shape)
        lr = jnp.sqrt((lr + n1) ** 2 + n2**2)
    return LowField(lr, hr, bias, radial_displacement(hr.shape, k), k)


def _contrast_diff(image, gm, wm):
    wsum, gsum = wm.sum() + 1e-6, gm.sum() + 1e-6
    return (image * wm).sum() / wsum - (image * gm).sum() / gsum


@functools.partial(jax.jit, static_argnums=(5, 6))
def _simulate(hr, gm, wm, strengths, key, scale, noisy):
    keys = jax.random.split(key, hr.shape[0])
    return jax.vmap(lambda a, b, c, k: _simulate_one(a, b, c, strengths, k, scale, noisy))(
        hr, gm, wm, keys
    )


def simulate_lowfield(
    hr: Image, gm: Image, wm: Image, config: FieldSimConfig, *, key: Key
) -> LowField:
    """Simulate one low-field acquisition per slice of `hr` (b, h, w), one key per slice.

    Only `scale` and whether there is noise are compiled in; the strengths are traced, so
    sweeping them does not recompile. With an integer scale dividing the slice this reproduces
    `degrade_batch` (same key splits, same operations), plus the signed displacement and the
    warp coefficient.
    """
    hr, gm, wm = (jnp.asarray(a, jnp.float32) for a in (hr, gm, wm))
    validate_fieldsim(config, tuple(hr.shape))
    if gm.shape != hr.shape or wm.shape != hr.shape:
        raise ValueError(f"gm, wm: expected the shape of hr {hr.shape}, got {gm.shape}, {wm.shape}")
    if not bool(jnp.isfinite(hr).all()):
        raise ValueError("hr: contains NaN or inf")
    strengths = jnp.asarray(
        [config.noise_sigma, config.bias_strength, config.warp_strength, config.contrast_reduction],
        jnp.float32,
    )
    return _simulate(hr, gm, wm, strengths, key, float(config.scale), config.noise_sigma > 0)


def guidance_maps(sim: LowField, *, displacement_scale: float = 1.0) -> Channels:
    """The correction maps as guidance channels (b, h, w, 2): log bias, displacement / scale."""
    return jnp.stack([jnp.log(sim.bias), sim.displacement / displacement_scale], axis=-1)


def guided_condition(
    lr: Float[Array, "batch low_height low_width"],
    guidance: Channels,
    out_shape: tuple[int, int],
) -> CondChannels:
    """Network conditioning (b, h, w, 1 + g): bicubic(lr) on the HR grid + guidance channels.

    `lr` may have any spatial size (x2, x3, x4, x2.5 ...): the student needs no retraining
    because it only ever sees the HR grid.
    """
    if lr.ndim != 3:
        raise ValueError(f"lr: expected (batch, height, width), got shape {lr.shape}")
    if guidance.ndim != 4 or guidance.shape[:3] != (lr.shape[0], *out_shape):
        raise ValueError(
            f"guidance: expected (batch, {out_shape[0]}, {out_shape[1]}, channels) for "
            f"{lr.shape[0]} slices, got {guidance.shape}"
        )
    if not (np.isfinite(np.asarray(lr)).all() and np.isfinite(np.asarray(guidance)).all()):
        raise ValueError("lr, guidance: contain NaN or inf")
    up = upsample(jnp.asarray(lr, jnp.float32), tuple(out_shape))
    return jnp.concatenate([up[..., None], jnp.asarray(guidance, jnp.float32)], axis=-1)


def correct_lowfield(lr_up: Image, sim: LowField) -> Image:
    """Apply the correction maps to an HR-grid image: divide out the bias, undo the warp."""
    return jax.vmap(radial_unwarp)(lr_up / sim.bias, sim.warp_k)
