"""Quality of generated digits: conditioning accuracy and a Frechet distance on classifier
features (the FID recipe with our digits classifier in place of Inception)."""

import jax.numpy as jnp
import numpy as np
import scipy.linalg

from ._models import DigitClassifier


def conditioning_accuracy(classifier: DigitClassifier, images, labels) -> float:
    """Share of generated images that the classifier labels as their conditioning digit."""
    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    if images.ndim != 3 or images.shape[1:] != (8, 8) or len(images) != len(labels):
        raise ValueError(
            f"images: expected (N, 8, 8) matching labels ({len(labels)}), got {images.shape}"
        )
    pred = np.asarray(classifier(jnp.asarray(images))).argmax(-1)
    return float((pred == labels).mean())


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between two feature sets."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"feats_a, feats_b: expected (N>=2, D) arrays, got {a.shape}, {b.shape}")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eye = 1e-6 * np.eye(len(sa))  # a small ridge keeps sqrtm stable for singular covariances
    sa, sb = sa + eye, sb + eye
    covmean = np.real(scipy.linalg.sqrtm(sa @ sb))
    return float(mu @ mu + np.trace(sa + sb - 2 * covmean))


def classifier_frechet(classifier: DigitClassifier, images_a, images_b) -> float:
    fa = np.asarray(classifier.features(jnp.asarray(images_a, jnp.float32)))
    fb = np.asarray(classifier.features(jnp.asarray(images_b, jnp.float32)))
    return frechet_distance(fa, fb)
