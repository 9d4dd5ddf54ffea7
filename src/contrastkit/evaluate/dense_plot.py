"""The dense probe's picture: images with their true, probed and open-vocabulary cell maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from .plots import _save

COLUMNS = (("true", "true cells"), ("probe", "linear probe"), ("open_vocab", "open vocabulary (object cells)"))


def plot_dense_maps(
    images: Sequence[Image.Image],
    maps: Mapping[str, np.ndarray],
    names: Sequence[str],
    grid: int,
    path: str | Path,
    *,
    title: str = "",
) -> None:
    """One row per image: the image, then each cell map laid over it (background cells left clear)."""
    palette = colormaps["tab10"]
    colours = np.array([(0, 0, 0, 0)] + [palette(k % 10) for k in range(len(names) - 1)])
    n = len(images)
    fig = Figure(figsize=(2.2 * (1 + len(COLUMNS)), 2.2 * n + 0.9), layout="constrained")
    axes = fig.subplots(n, 1 + len(COLUMNS), squeeze=False)
    for row, image in enumerate(images):
        size = image.size[0]
        axes[row, 0].imshow(image)
        for col, (key, label) in enumerate(COLUMNS, start=1):
            ax = axes[row, col]
            ax.imshow(image)
            overlay = colours[np.asarray(maps[key][row]).reshape(grid, grid)].copy()
            overlay[..., 3] *= 0.6
            ax.imshow(overlay, extent=(-0.5, size - 0.5, size - 0.5, -0.5), interpolation="nearest")
            if row == 0:
                ax.set_title(label, fontsize="small")
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize="small")
    fig.legend(
        handles=[Patch(color=colours[k], label=names[k]) for k in range(1, len(names))],
        loc="outside lower center",
        ncol=min(len(names) - 1, 8),
        fontsize="small",
    )
    fig.suptitle(title or "Dense probe")
    _save(fig, Path(path))
