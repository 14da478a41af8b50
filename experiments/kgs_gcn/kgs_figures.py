"""Figures of the kgs_gcn experiment: rendered heatmaps, adjacencies, robustness curves."""

import jax
import matplotlib.pyplot as plt
import numpy as np

import skel_gcn_jax as sg

_render = jax.jit(sg.render_skeleton_heatmaps, static_argnums=1)


def heatmap_figure(x: np.ndarray, splat: sg.SplatConfig, title: str):
    """Anisotropic vs isotropic splats of one sequence (frames summed over time, groups summed)."""
    fig, axes = plt.subplots(2, 3, figsize=(9, 6))
    views = ("front (x-y)", "side (z-y)", "top (x-z)")
    for row, iso in enumerate((False, True)):
        hm = np.asarray(_render(x[None], splat._replace(isotropic=iso)))[0]
        t = hm.shape[0] // 2
        img = hm[t - 2 : t + 2].sum(axis=(0, 2))  # 4 frames around the middle, all body parts
        for k in range(3):
            ax = axes[row, k]
            ax.imshow(img[k], origin="lower", cmap="magma")
            ax.set_title(
                f"{'isotropic' if iso else 'velocity-anisotropic'}: {views[k]}", fontsize=8
            )
            ax.axis("off")
    fig.suptitle(title)
    return fig


def adjacency_figure(panels: dict[str, np.ndarray]):
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4))
    for ax, (name, a) in zip(np.atleast_1d(axes), panels.items(), strict=True):
        im = ax.imshow(a, cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("sender joint")
        ax.set_ylabel("receiver joint")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def robustness_figure(curves: dict[str, dict[str, tuple[list[float], list[float]]]]):
    """`curves[kind][model] = (levels, median top-1)`."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.6))
    labels = {
        "sparsity": "frame sparsity (fraction lost)",
        "dropout": "joint dropout rate",
        "noise": "joint noise std (m)",
    }
    for ax, (kind, per_model) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        for model, (levels, acc) in per_model.items():
            ax.plot(levels, acc, marker="o", label=model)
        ax.set_xlabel(labels[kind])
        ax.set_ylabel("X-Sub top-1 (median over seeds)")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    return fig
