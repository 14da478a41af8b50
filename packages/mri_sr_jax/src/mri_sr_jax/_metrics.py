"""Image-quality metrics, whole-image and restricted to a region mask: PSNR, SSIM and HFEN.

SSIM follows Wang et al. (2004) with an 11-tap Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03 and population covariances (skimage's `gaussian_weights=True,
use_sample_covariance=False`). HFEN is ||LoG(x) - LoG(y)|| / ||LoG(y)|| with a
Laplacian-of-Gaussian of sigma 1.5 (Ravishankar & Bresler 2011).
"""

import jax
import jax.numpy as jnp

from ._degrade import gaussian_blur
from ._types import Array, Float, Slice


def _mask_mean(x: Array, mask: Array | None) -> Array:
    if mask is None:
        return x.mean()
    m = mask.astype(x.dtype)
    return (x * m).sum() / jnp.maximum(m.sum(), 1.0)


def psnr(x: Slice, ref: Slice, *, data_range: float = 1.0, mask: Array | None = None) -> Array:
    """10 log10(range^2 / MSE), the MSE taken over `mask` if given."""
    return 10.0 * jnp.log10(data_range**2 / _mask_mean((x - ref) ** 2, mask))


def _gauss_window(
    img: Slice, sigma: float = 1.5, radius: int = 5
) -> Float[Array, "valid_height valid_width"]:
    t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    k = jnp.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    p = jax.vmap(lambda r: jnp.convolve(r, k, mode="valid"))(img)
    return jax.vmap(lambda c: jnp.convolve(c, k, mode="valid"), in_axes=1, out_axes=1)(p)


def ssim_map(
    x: Slice, ref: Slice, *, data_range: float = 1.0
) -> Float[Array, "valid_height valid_width"]:
    """Local SSIM on the valid region (the map is 10 pixels smaller in each axis)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _gauss_window(x), _gauss_window(ref)
    vx = _gauss_window(x * x) - mx * mx
    vy = _gauss_window(ref * ref) - my * my
    cxy = _gauss_window(x * ref) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def ssim(x: Slice, ref: Slice, *, data_range: float = 1.0, mask: Array | None = None) -> Array:
    """Mean SSIM over the valid region (and over `mask` there, if given)."""
    smap = ssim_map(x, ref, data_range=data_range)
    if mask is not None:
        mask = mask[5:-5, 5:-5]
    return _mask_mean(smap, mask)


def log_filter(img: Slice, sigma: float = 1.5) -> Slice:
    """Laplacian of Gaussian: 5-point Laplacian of the Gaussian-blurred image (edge padded)."""
    g = jnp.pad(gaussian_blur(img, sigma), 1, mode="edge")
    return g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]


def hfen(x: Slice, ref: Slice, *, mask: Array | None = None) -> Array:
    """High-frequency error norm (lower is better)."""
    lx, lr = log_filter(x), log_filter(ref)
    m = 1.0 if mask is None else mask.astype(x.dtype)
    return jnp.sqrt(((lx - lr) ** 2 * m).sum() / jnp.maximum((lr**2 * m).sum(), 1e-12))


def image_metrics(
    x: Slice,
    ref: Slice,
    masks: Array | None = None,
    *,
    names: tuple[str, ...] = ("deep_wm", "cortex", "junction"),
    data_range: float = 1.0,
) -> dict[str, Array]:
    """{"psnr", "ssim", "hfen"} whole-image plus "<metric>/<region>" for each mask channel."""
    if x.shape != ref.shape or x.ndim != 2:
        raise ValueError(
            f"x, ref: expected two 2-D slices of one shape, got {x.shape}, {ref.shape}"
        )
    out = {
        "psnr": psnr(x, ref, data_range=data_range),
        "ssim": ssim(x, ref, data_range=data_range),
        "hfen": hfen(x, ref),
    }
    if masks is not None:
        if masks.shape[:2] != x.shape or masks.shape[-1] != len(names):
            raise ValueError(f"masks: expected {x.shape + (len(names),)}, got {masks.shape}")
        for i, name in enumerate(names):
            m = masks[..., i]
            out[f"psnr/{name}"] = psnr(x, ref, data_range=data_range, mask=m)
            out[f"ssim/{name}"] = ssim(x, ref, data_range=data_range, mask=m)
            out[f"hfen/{name}"] = hfen(x, ref, mask=m)
    return out
