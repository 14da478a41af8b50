"""Real-image templates for the editing experiment: scikit-image's sample images that ship
inside its wheel (read from the package's data folder, no download), as grayscale squares of
the editing model's size in its value range [-1, 1]."""

import numpy as np
import skimage.data
from skimage.color import rgb2gray
from skimage.transform import resize
from skimage.util import img_as_float

# bundled in the scikit-image wheel (skimage/data/*.png); others need a pooch download
BUNDLED = ("camera", "coins", "moon", "astronaut", "text", "page", "clock", "brick")


def sample_image(name: str, size: int) -> np.ndarray:
    """`skimage.data.<name>()` as float32 (size, size) in [-1, 1]: grayscale, the centred
    square crop, resized with anti-aliasing, then stretched to the full range (as the digits
    span it)."""
    if name not in BUNDLED:
        raise ValueError(f"image_templates: {name!r} is not one of the bundled {BUNDLED}")
    img = img_as_float(getattr(skimage.data, name)())
    if img.ndim == 3:
        img = rgb2gray(img[..., :3])
    h, w = img.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = resize(img[top : top + s, left : left + s], (size, size), anti_aliasing=True)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / max(hi - lo, 1e-6)
    return np.clip(2.0 * img - 1.0, -1.0, 1.0).astype(np.float32)
