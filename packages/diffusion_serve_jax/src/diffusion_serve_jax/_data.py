"""Data that ships inside installed packages: scikit-learn's 8x8 digits, and edge maps."""

import numpy as np


def load_digits_dataset() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 scikit-learn digits as float32 images in [-1, 1] (N, 8, 8) and int32 labels (N,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images.astype(np.float32) / 16.0) * 2.0 - 1.0
    return images, d.target.astype(np.int32)


def edge_map(images: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of (N, H, W) images, scaled to [0, 1] per image.

    The control signal of the ControlNet-style adapter: a pure function of the image.
    """
    x = np.asarray(images, np.float32)
    if x.ndim != 3:
        raise ValueError(f"images: expected (N, H, W), got shape {x.shape}")
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (p[:, 1:-1, 2:] - p[:, 1:-1, :-2]) * 2 + (p[:, :-2, 2:] - p[:, :-2, :-2])
    gx = gx + (p[:, 2:, 2:] - p[:, 2:, :-2])
    gy = (p[:, 2:, 1:-1] - p[:, :-2, 1:-1]) * 2 + (p[:, 2:, :-2] - p[:, :-2, :-2])
    gy = gy + (p[:, 2:, 2:] - p[:, :-2, 2:])
    mag = np.sqrt(gx**2 + gy**2)
    peak = mag.reshape(len(mag), -1).max(axis=1).reshape(-1, 1, 1)
    return (mag / np.maximum(peak, 1e-6)).astype(np.float32)


def downsample2(images: np.ndarray) -> np.ndarray:
    """2x2 average pooling of (N, H, W) images (the upscaler's training input)."""
    x = np.asarray(images, np.float32)
    n, h, w = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
