"""Degradation pipeline: a clean 1 mm slice -> a low-field-like, low-resolution acquisition.

Order (all keys explicit): reduced grey/white contrast -> radial gradient-nonlinearity warp ->
smooth multiplicative bias field -> resolution loss (Gaussian blur + decimation, or k-space
truncation) -> Rician noise. Returns the low-res image, the high-res target and the two
correction maps (bias field and gradient-nonlinearity displacement), both on the HR grid.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._types import Array, Float, Key, LowSlice, Slice


class DegradeConfig(NamedTuple):
    scale: int = 4
    method: str = "blur"  # "blur" (Gaussian blur + decimation) or "kspace" (truncation)
    noise_sigma: float = 0.0  # Rician noise std relative to the image maximum (1.0)
    bias_strength: float = 0.0  # std of the log bias field
    warp_strength: float = 0.0  # radial distortion coefficient (k in r' = r (1 + k r^2))
    contrast_reduction: float = 0.0  # fraction of the GM/WM contrast removed, in [0, 1)
    # bias field normalisation: "geometric" (unit geometric mean: on average ~exp(var/2) > 1,
    # i.e. a biased image is brighter than its target) or "arithmetic" (unit mean over the
    # slice: no global brightness offset between input and target)
    bias_mean: str = "geometric"


BIAS_MEANS = ("geometric", "arithmetic")


class Degraded(NamedTuple):
    lr: Array  # (h / scale, w / scale)
    hr: Array  # (h, w) clean target
    bias: Array  # (h, w) multiplicative bias field applied
    gradwarp: Array  # (h, w) radial displacement magnitude in pixels


def validate_degrade(config: DegradeConfig, shape: tuple[int, ...]) -> None:
    """Host-side checks, before anything is traced."""
    if config.scale not in (1, 2, 3, 4, 5, 6, 8):
        raise ValueError(f"scale: expected an integer factor in 1..8, got {config.scale}")
    if config.method not in ("blur", "kspace"):
        raise ValueError(f"method: expected 'blur' or 'kspace', got {config.method!r}")
    for name in ("noise_sigma", "bias_strength", "warp_strength"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name}: expected >= 0, got {getattr(config, name)}")
    if config.bias_mean not in BIAS_MEANS:
        raise ValueError(f"bias_mean: expected one of {BIAS_MEANS}, got {config.bias_mean!r}")
    if not 0.0 <= config.contrast_reduction < 1.0:
        raise ValueError(f"contrast_reduction: expected in [0, 1), got {config.contrast_reduction}")
    if len(shape) != 2 or shape[0] % config.scale or shape[1] % config.scale:
        raise ValueError(f"hr: expected a 2-D slice divisible by scale {config.scale}, got {shape}")


def gaussian_blur(image: Slice, sigma: float) -> Slice:
    """Separable Gaussian blur with reflect padding (truncated at 3 sigma)."""
    if sigma <= 0:
        return image
    r = max(int(3 * sigma + 0.5), 1)
    x = jnp.arange(-r, r + 1, dtype=jnp.float32)
    k = jnp.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    p = jnp.pad(image, r, mode="reflect")
    p = jax.vmap(lambda row: jnp.convolve(row, k, mode="valid"))(p)
    return jax.vmap(lambda col: jnp.convolve(col, k, mode="valid"), in_axes=1, out_axes=1)(p)


def blur_decimate(image: Slice, scale: int) -> LowSlice:
    """Blur with FWHM = scale pixels, then sample LR pixel centres at s i + (s - 1) / 2."""
    if scale == 1:
        return image
    blurred = gaussian_blur(image, scale / 2.3548)
    h, w = image.shape
    return jax.image.resize(blurred, (h // scale, w // scale), "linear", antialias=False)


def kspace_truncate(image: Slice, scale: int) -> LowSlice:
    """Keep the central 1/scale of k-space along each axis (the LR acquisition), magnitude image."""
    if scale == 1:
        return image
    h, w = image.shape
    lh, lw = h // scale, w // scale
    k = jnp.fft.fftshift(jnp.fft.fft2(image))
    top, left = (h - lh) // 2, (w - lw) // 2
    k = k[top : top + lh, left : left + lw]
    return jnp.abs(jnp.fft.ifft2(jnp.fft.ifftshift(k))) / (scale * scale)


def upsample(lr: Array, shape: tuple[int, int], method: str = "cubic") -> Array:
    """Interpolate (..., h, w) LR images onto the HR grid (bicubic by default): the SR input."""
    return jax.image.resize(lr, lr.shape[:-2] + tuple(shape), method)


def reduce_contrast(image: Slice, gm: Slice, wm: Slice, fraction: float) -> Slice:
    """Move WM down and GM up by fraction/2 of their mean difference (weighted by probability)."""
    if fraction == 0.0:
        return image
    wsum, gsum = wm.sum() + 1e-6, gm.sum() + 1e-6
    diff = (image * wm).sum() / wsum - (image * gm).sum() / gsum
    return image - 0.5 * fraction * diff * (wm - gm)


def bias_field(
    key: Key,
    shape: tuple[int, int],
    strength: float | Float[Array, ""],
    order: int = 3,
    mean: str = "geometric",
) -> Slice:
    """exp(sum of random low-order Legendre-like polynomial terms).

    `mean="geometric"`: unit geometric mean over the slice (the log field has zero mean);
    `"arithmetic"`: the same field divided by its mean, so it neither brightens nor darkens
    the slice on average.
    """
    if mean not in BIAS_MEANS:
        raise ValueError(f"mean: expected one of {BIAS_MEANS}, got {mean!r}")
    h, w = shape
    y = jnp.linspace(-1.0, 1.0, h)[:, None]
    x = jnp.linspace(-1.0, 1.0, w)[None, :]
    coeffs = jax.random.normal(key, (order + 1, order + 1)) * strength
    log_field = jnp.zeros(shape)
    for i in range(order + 1):
        for j in range(order + 1 - i):
            if i + j:
                log_field = log_field + coeffs[i, j] * (y**i) * (x**j)
    field = jnp.exp(log_field - log_field.mean())
    return field / field.mean() if mean == "arithmetic" else field


def radial_warp(image: Slice, k: Array) -> tuple[Slice, Slice]:
    """Gradient-nonlinearity-like radial distortion r' = r (1 + k r^2) about the slice centre.

    Returns the warped image and the displacement magnitude (pixels) at each output pixel.
    """
    h, w = image.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    rmax = max(cy, cx)
    ii, jj = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )
    dy, dx = (ii - cy) / rmax, (jj - cx) / rmax
    factor = 1.0 + k * (dy**2 + dx**2)
    sy, sx = cy + dy * factor * rmax, cx + dx * factor * rmax
    warped = jax.scipy.ndimage.map_coordinates(image, [sy, sx], order=1, mode="constant", cval=0.0)
    return warped, jnp.sqrt((sy - ii) ** 2 + (sx - jj) ** 2)


def rician(image: Slice, sigma: float, *, key: Key) -> Slice:
    """|x + sigma n1 + i sigma n2|: magnitude of complex Gaussian noise."""
    if sigma == 0.0:
        return image
    k1, k2 = jax.random.split(key)
    n1 = sigma * jax.random.normal(k1, image.shape)
    n2 = sigma * jax.random.normal(k2, image.shape)
    return jnp.sqrt((image + n1) ** 2 + n2**2)


def degrade(hr: Slice, gm: Slice, wm: Slice, config: DegradeConfig, *, key: Key) -> Degraded:
    """Simulate one low-field, low-resolution acquisition of `hr` (see module docstring)."""
    validate_degrade(config, tuple(hr.shape))
    return jax.jit(_degrade, static_argnums=3)(hr, gm, wm, config, key)


def _degrade(hr, gm, wm, config, key):
    kb, kw, kn = jax.random.split(key, 3)
    x = reduce_contrast(hr, gm, wm, config.contrast_reduction)
    k = config.warp_strength * jax.random.uniform(kw, (), minval=-1.0, maxval=1.0)
    x, disp = radial_warp(x, k)
    bias = bias_field(kb, hr.shape, config.bias_strength, mean=config.bias_mean)
    x = x * bias
    shrink = blur_decimate if config.method == "blur" else kspace_truncate
    lr = rician(shrink(x, config.scale), config.noise_sigma, key=kn)
    return Degraded(lr=lr, hr=hr, bias=bias, gradwarp=disp)


def degrade_batch(hr: Array, gm: Array, wm: Array, config: DegradeConfig, *, key: Key) -> Degraded:
    """`degrade` vmapped over a leading batch axis with one key per slice."""
    validate_degrade(config, tuple(hr.shape[1:]))
    return _degrade_batch(hr, gm, wm, config, key)


@functools.partial(jax.jit, static_argnums=3)
def _degrade_batch(hr, gm, wm, config, key):
    keys = jax.random.split(key, hr.shape[0])
    return jax.vmap(lambda a, b, c, k: _degrade(a, b, c, config, k))(hr, gm, wm, keys)
