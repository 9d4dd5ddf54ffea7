"""Dense probe maths: per-cell labels of a shapes-world scene, a linear probe on cells, segmentation metrics.

The protocol of dense linear probing (e.g. PixPro, Xie et al. 2021, and DINO's / iBOT's frozen-feature
segmentation): the encoder is frozen, a linear classifier maps each cell (patch) feature to a class, and
the score is per-cell accuracy and mean intersection-over-union. On the shapes world the labels come for
free: the scene description knows every object, and :func:`~contrastkit.data.shapes.render.object_map`
draws which object each pixel shows.

Cell label (grid G x G over the image): the object covering the largest share of the cell's pixels when
that share is at least ``min_fraction`` (default 0.2), else background. The objects are small next to a
cell (a 16-pixel cell at 64 px), so the majority pixel is background in 98% of cells; the share rule gives
about one object cell in eight. Classes: 0 = background, k = ``classes[k - 1]`` (the object's shape or
colour).

Metrics (``segmentation_metrics``): ``cell_acc`` (all cells), ``object_cell_acc`` (cells whose true label
is an object), ``miou`` = mean over the classes present in truth or prediction of
IoU_c = TP_c / (TP_c + FP_c + FN_c), and ``iou`` per class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

DEFAULT_MIN_FRACTION = 0.2
DEFAULT_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)


def grid_side(cells: int) -> int:
    """G for N = G x G cells; a clear error when the tower's tokens are not a square grid."""
    side = math.isqrt(cells)
    if side * side != cells:
        raise ValueError(f"dense: the image tower gives {cells} cell tokens, not a square grid G x G")
    return side


def cell_labels(
    objects: Image.Image,
    attributes: Sequence[str],
    classes: Sequence[str],
    grid: int,
    min_fraction: float = DEFAULT_MIN_FRACTION,
) -> np.ndarray:
    """G*G class ids (row-major, as the towers flatten their cells) from an object map.

    ``objects``: the ``L`` image of :func:`~contrastkit.data.shapes.render.object_map` (0 background,
    i + 1 object i); ``attributes[i]``: object i's shape or colour; ``classes``: the class names.
    """
    ids = np.asarray(objects, dtype=np.int64)
    size = ids.shape[0]
    index = {name: k + 1 for k, name in enumerate(classes)}
    out = np.zeros(grid * grid, dtype=np.int64)
    for r in range(grid):
        for c in range(grid):
            block = ids[r * size // grid : (r + 1) * size // grid, c * size // grid : (c + 1) * size // grid]
            counts = np.bincount(block.ravel(), minlength=len(attributes) + 1)
            counts[0] = 0
            best = int(counts.argmax())
            if best and counts[best] >= min_fraction * block.size:
                out[r * grid + c] = index[attributes[best - 1]]
    return out


def segmentation_metrics(true: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Cell accuracy, object-cell accuracy, per-class IoU and their mean over the classes that occur."""
    true, pred = np.asarray(true).ravel(), np.asarray(pred).ravel()
    iou: dict[str, float] = {}
    for k, name in enumerate(names):
        tp = int(np.sum((true == k) & (pred == k)))
        union = int(np.sum((true == k) | (pred == k)))
        if union:
            iou[name] = tp / union
    objects = true > 0
    return {
        "cell_acc": float(np.mean(true == pred)) if true.size else float("nan"),
        "object_cell_acc": float(np.mean(true[objects] == pred[objects])) if objects.any() else float("nan"),
        "miou": float(np.mean(list(iou.values()))) if iou else float("nan"),
        "iou": iou,
        "n_cells": int(true.size),
        "n_object_cells": int(objects.sum()),
    }


def fit_cell_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    max_iter: int = 1000,
) -> tuple[Any, float]:
    """Standardise, then multinomial logistic regression; C chosen by validation mIoU, refit on train + val.

    Standardising each feature (train statistics) is DINO's linear-evaluation choice (a BatchNorm without
    affine before the linear layer); on L2-normalised cells the best C sat at the grid's upper edge.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def probe(c: float) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))

    n_classes = int(max(train_y.max(initial=0), val_y.max(initial=0))) + 1
    names = [str(k) for k in range(n_classes)]
    best_c, best = c_grid[0], -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in c_grid:
            score = segmentation_metrics(val_y, probe(c).fit(train_x, train_y).predict(val_x), names)["miou"]
            if score > best:
                best_c, best = c, score
        final = probe(best_c).fit(np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]))
    return final, best_c
