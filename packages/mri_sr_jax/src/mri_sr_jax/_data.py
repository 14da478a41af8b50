"""Real MRI that ships inside installed wheels: the MNI152 template (nilearn) and dipy's T1 slice.

Nothing is downloaded. The template files are read straight from nilearn's package data with
nibabel and rescaled to [0, 1] exactly as `nilearn.datasets.load_mni152_template` does; the
grey/white-matter probability maps likewise.
"""

import importlib.util
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np

from ._types import Array, Key

_MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
REGIONS = ("deep_wm", "cortex", "junction")


class Template(NamedTuple):
    """MNI152 1 mm volumes in [0, 1] (x, y, z = 197, 233, 189) and their shared affine."""

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    affine: np.ndarray


def _package_dir(name: str) -> pathlib.Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {name!r} is not installed; it ships the MRI data used here"
        )
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def mni152_path(kind: str = "t1") -> pathlib.Path:
    """Path of the bundled nilearn NIfTI file for `kind` in {"t1", "gm", "wm"}."""
    if kind not in _MNI_FILES:
        raise ValueError(f"kind: expected one of {sorted(_MNI_FILES)}, got {kind!r}")
    return _package_dir("nilearn") / "datasets" / "data" / _MNI_FILES[kind]


def load_mni152() -> Template:
    """Load T1, GM and WM templates (float32, each divided by its maximum)."""
    vols = {}
    affine = None
    for kind in ("t1", "gm", "wm"):
        img = nib.load(mni152_path(kind))
        data = np.asarray(img.dataobj, dtype=np.float32)
        vols[kind] = data / data.max()
        affine = img.affine
    return Template(vols["t1"], vols["gm"], vols["wm"], np.asarray(affine))


def load_dipy_t1_slice() -> np.ndarray:
    """dipy's real 256 x 256 coronal T1 slice (dipy/data/files/t1_coronal_slice.npy), in [0, 1]."""
    path = _package_dir("dipy") / "data" / "files" / "t1_coronal_slice.npy"
    data = np.load(path).astype(np.float32)
    return data / data.max()


def region_masks(gm: Array | np.ndarray, wm: Array | np.ndarray) -> Array:
    """Boolean masks (..., 3) for the three expert regions of MoEDiff-SR.

    deep white matter (centrum semiovale): WM > 0.9; sulcal/gyral cortex: GM > 0.6 and WM < 0.1;
    grey-white junction: GM > 0.3 and WM > 0.3.
    """
    deep_wm = wm > 0.9
    cortex = (gm > 0.6) & (wm < 0.1)
    junction = (gm > 0.3) & (wm > 0.3)
    return jnp.stack([deep_wm, cortex, junction], axis=-1)


def slab_split(
    num_slices: int,
    test_slabs: list[tuple[int, int]],
    *,
    gap: int = 2,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Train/test slice indices: test = union of [start, stop) slabs; train excludes them +- gap.

    `valid` (bool per slice, e.g. enough brain in the slice) restricts both sets.
    """
    if num_slices < 1:
        raise ValueError(f"num_slices: expected >= 1, got {num_slices}")
    test = np.zeros(num_slices, bool)
    near = np.zeros(num_slices, bool)
    for start, stop in test_slabs:
        if not 0 <= start < stop <= num_slices:
            raise ValueError(f"test_slabs: slab ({start}, {stop}) is outside [0, {num_slices})")
        test[start:stop] = True
        near[max(start - gap, 0) : min(stop + gap, num_slices)] = True
    valid = np.ones(num_slices, bool) if valid is None else np.asarray(valid, bool)
    return np.flatnonzero(~near & valid), np.flatnonzero(test & valid)


def axial_slices(
    template: Template,
    index: np.ndarray | list[int] | tuple[int, ...],
    crop: tuple[int, int] | None = None,
):
    """Axial slices (n, x, y) of T1, GM, WM, center-cropped to `crop` (HR grid)."""
    index = np.asarray(index)
    out = []
    for vol in (template.t1, template.gm, template.wm):
        s = np.moveaxis(vol[:, :, index], -1, 0)
        if crop is not None:
            h, w = s.shape[1:]
            ch, cw = crop
            if ch > h or cw > w:
                raise ValueError(f"crop: {crop} is larger than the slice {(h, w)}")
            top, left = (h - ch) // 2, (w - cw) // 2
            s = s[:, top : top + ch, left : left + cw]
        out.append(jnp.asarray(s))
    return tuple(out)


def held_out_split(
    template: Template,
    test_slabs: list[tuple[int, int]],
    *,
    gap: int = 2,
    min_brain: float = 0.0,
    train_stride: int = 1,
    test_stride: int = 1,
    crop: tuple[int, int] | None = None,
):
    """Train and held-out test slices: `((t1, gm, wm), (t1, gm, wm), train_idx, test_idx)`.

    Slices with less than `min_brain` of their voxels inside the brain (T1 > 0.1) are dropped;
    the strides thin the training and test sets.
    """
    if train_stride < 1 or test_stride < 1:
        raise ValueError(
            f"train_stride/test_stride: expected >= 1, got {train_stride}/{test_stride}"
        )
    brain = (template.t1 > 0.1).mean(axis=(0, 1))
    train_idx, test_idx = slab_split(
        template.t1.shape[2],
        [tuple(s) for s in test_slabs],
        gap=gap,
        valid=brain > min_brain,
    )
    train_idx, test_idx = train_idx[::train_stride], test_idx[::test_stride]
    return (
        axial_slices(template, train_idx, crop),
        axial_slices(template, test_idx, crop),
        train_idx,
        test_idx,
    )


def train_val_test_split(
    template: Template,
    test_slabs: list[tuple[int, int]],
    val_slabs: list[tuple[int, int]],
    *,
    gap: int = 2,
    min_brain: float = 0.0,
    train_stride: int = 1,
    test_stride: int = 1,
    val_stride: int = 1,
    crop: tuple[int, int] | None = None,
):
    """`held_out_split` with validation slabs: `(train, test, val, train_idx, test_idx, val_idx)`.

    Each of train/test/val is a `(t1, gm, wm)` tuple. Validation slabs are held out of training
    with the same `gap` as the test slabs, for model choices and early stopping, so the test
    slabs serve only the final numbers. Strides thin each set after the split.
    """
    if min(train_stride, test_stride, val_stride) < 1:
        raise ValueError(
            "train_stride/test_stride/val_stride: expected >= 1, got "
            f"{train_stride}/{test_stride}/{val_stride}"
        )
    test_slabs, val_slabs = [tuple(s) for s in test_slabs], [tuple(s) for s in val_slabs]
    brain = (template.t1 > 0.1).mean(axis=(0, 1))
    train_idx, held_idx = slab_split(
        template.t1.shape[2], test_slabs + val_slabs, gap=gap, valid=brain > min_brain
    )

    def inside(slabs, stride):
        keep = np.zeros(len(held_idx), bool)
        for start, stop in slabs:
            keep |= (held_idx >= start) & (held_idx < stop)
        return held_idx[keep][::stride]

    train_idx = train_idx[::train_stride]
    test_idx, val_idx = inside(test_slabs, test_stride), inside(val_slabs, val_stride)
    return (
        axial_slices(template, train_idx, crop),
        axial_slices(template, test_idx, crop),
        axial_slices(template, val_idx, crop),
        train_idx,
        test_idx,
        val_idx,
    )


def _smooth_field(key: Key, shape: tuple[int, int], grid: int) -> Array:
    coarse = jax.random.normal(key, (grid, grid))
    return jax.image.resize(coarse, shape, "cubic")


def elastic_intensity_augment(
    images: Array, *, key: Key, amplitude: float = 2.0, grid: int = 5, gamma_range: float = 0.15
) -> Array:
    """Random smooth elastic warp (same for every channel) and random gamma on channel 0.

    `images` is (height, width, channels) with channel 0 the T1 (others, e.g. GM/WM maps, are
    warped but keep their intensities). Amplitude is the displacement std in pixels.
    """
    h, w, _ = images.shape
    kx, ky, kg = jax.random.split(key, 3)
    dx = amplitude * _smooth_field(kx, (h, w), grid)
    dy = amplitude * _smooth_field(ky, (h, w), grid)
    ii, jj = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )
    coords = [ii + dx, jj + dy]
    warped = jnp.stack(
        [
            jax.scipy.ndimage.map_coordinates(images[..., c], coords, order=1, mode="nearest")
            for c in range(images.shape[-1])
        ],
        axis=-1,
    )
    gamma = jnp.exp(gamma_range * jax.random.normal(kg, ()))
    t1 = jnp.clip(warped[..., 0], 0.0, None) ** gamma
    return warped.at[..., 0].set(t1)
