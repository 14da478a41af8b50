"""Figures saved as PNG next to results.json, with the Agg backend (no display needed)."""

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig: "plt.Figure", workdir: str | pathlib.Path, name: str) -> str:
    """Write `<workdir>/<name>.png` and close the figure; returns the file name."""
    filename = name if name.endswith(".png") else f"{name}.png"
    path = pathlib.Path(workdir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return filename
