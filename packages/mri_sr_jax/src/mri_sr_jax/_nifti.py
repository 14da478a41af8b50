"""NIfTI in and out (nibabel): super-resolve a user's volume slice-wise with a correct affine.

Voxel-centre convention (the same as the degradation's decimation): LR voxel i along an
upsampled axis covers HR voxels s i .. s i + s - 1, so its centre is HR coordinate
s i + (s - 1) / 2, and HR voxel j sits at LR coordinate (j + 1/2) / s - 1/2.
"""

from collections.abc import Callable

import nibabel as nib
import numpy as np


def _axis_scaling(scale: float, axes: tuple[int, ...], inverse: bool) -> np.ndarray:
    m = np.eye(4)
    for ax in axes:
        if inverse:  # HR index j -> LR index (j + 1/2)/s - 1/2
            m[ax, ax], m[ax, 3] = 1.0 / scale, 0.5 / scale - 0.5
        else:  # LR index i -> HR index s i + (s - 1)/2
            m[ax, ax], m[ax, 3] = scale, (scale - 1) / 2
    return m


def highres_affine(affine: np.ndarray, scale: float, axes: tuple[int, ...] = (0, 1)) -> np.ndarray:
    """Affine of the grid `scale` times finer along `axes`, covering the same field of view."""
    _check_affine(affine, scale)
    return np.asarray(affine) @ _axis_scaling(scale, axes, inverse=True)


def lowres_affine(affine: np.ndarray, scale: float, axes: tuple[int, ...] = (0, 1)) -> np.ndarray:
    """Affine of the grid `scale` times coarser along `axes` (inverse of `highres_affine`)."""
    _check_affine(affine, scale)
    return np.asarray(affine) @ _axis_scaling(scale, axes, inverse=False)


def _check_affine(affine, scale):
    if np.shape(affine) != (4, 4):
        raise ValueError(f"affine: expected a 4x4 matrix, got shape {np.shape(affine)}")
    if not scale > 0:
        raise ValueError(f"scale: expected > 0, got {scale}")


def superresolve_nifti(
    img: nib.Nifti1Image,
    sr_fn: Callable[[np.ndarray], np.ndarray],
    scale: int,
    *,
    slice_axis: int = 2,
) -> nib.Nifti1Image:
    """Apply a 2-D SR function to every slice along `slice_axis`; returns a new NIfTI image.

    `sr_fn` maps an (h, w) float slice to (scale h, scale w). Intensities are normalised to
    [0, 1] for the function and mapped back; the affine is refined in-plane with
    `highres_affine`, the header's zooms updated, the dtype float32.
    """
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"img: expected a 3-D volume, got shape {data.shape}")
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis: expected 0, 1 or 2, got {slice_axis}")
    if not np.all(np.isfinite(data)):
        raise ValueError("img: the volume contains NaN or inf")
    lo, hi = float(data.min()), float(data.max())
    span = hi - lo if hi > lo else 1.0
    vol = np.moveaxis((data - lo) / span, slice_axis, 0)
    out = []
    for sl in vol:
        up = np.asarray(sr_fn(sl), dtype=np.float32)
        if up.shape != (sl.shape[0] * scale, sl.shape[1] * scale):
            raise ValueError(
                f"sr_fn: expected a {scale}x larger slice, got {up.shape} from {sl.shape}"
            )
        out.append(up)
    hr = np.moveaxis(np.stack(out) * span + lo, 0, slice_axis)
    axes = tuple(a for a in range(3) if a != slice_axis)
    new = nib.Nifti1Image(hr.astype(np.float32), highres_affine(img.affine, scale, axes))
    new.header.set_xyzt_units(*img.header.get_xyzt_units())
    return new
