"""The suite's ``dense`` task: frozen cell features probed per grid cell, and read open-vocabulary.

For every attribute the records' objects carry and the dataset classifies zero-shot (the shapes world:
``shape``, ``colour``), on the cells of :mod:`~contrastkit.evaluate.dense_probe`:

- **linear probe**: a logistic regression on the standardised cell features of the train split (the
  last fifth of it chooses C), scored on the evaluated split: cell accuracy, object-cell accuracy, mIoU;
- **open vocabulary**: each object cell's joint-space embedding against the class prompts' text
  embeddings (the zero-shot task's templates), argmax; accuracy on the true object cells (no training).

The first ``N_EXAMPLES`` evaluated images keep their true / probe / open-vocabulary maps of the first
attribute, drawn by the report as ``dense_maps.png``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.records import Record, ZeroShotTask
from ..data.shapes.grammar import Scene
from ..data.shapes.render import object_map
from .dense_plot import plot_dense_maps
from .dense_probe import DEFAULT_MIN_FRACTION, cell_labels, fit_cell_probe, grid_side, segmentation_metrics
from .request import EvalRequest, TaskLog, first_records, open_split
from .zeroshot import class_embeddings

N_EXAMPLES = 6
DEFAULT_TRAIN_RECORDS = 1000


def _scene_records(records: Sequence[Record]) -> list[Record]:
    return [r for r in records if isinstance(r.meta, dict) and r.meta.get("objects") is not None]


def _cells(embedder: Any, records: Sequence[Record], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """B x N x F cell features and B x N x D cell embeddings (unit rows) of the records' images."""
    feats, joint = [], []
    for s in range(0, len(records), batch_size):
        pixels = torch.stack([embedder.preprocess(r.load_image()) for r in records[s : s + batch_size]])
        f, j = embedder.embed_cells(pixels)
        feats.append(f)
        joint.append(j)
    return torch.cat(feats).numpy(), torch.cat(joint).numpy()


class Scenes:
    """Records with their object maps, drawn once and labelled per attribute."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = list(records)
        self.maps = [object_map(Scene.from_meta(r.meta)) for r in self.records]

    def labels(self, attribute: str, classes: Sequence[str], grid: int) -> np.ndarray:
        """R x G*G class ids of ``attribute`` (0 = background)."""
        return np.stack(
            [
                cell_labels(objects, [o[attribute] for o in r.meta["objects"]], classes, grid)
                for r, objects in zip(self.records, self.maps)
            ]
        )


def _attribute(
    task: ZeroShotTask,
    train: tuple[Scenes, np.ndarray],
    test: tuple[Scenes, np.ndarray, np.ndarray],
    grid: int,
    text_fn: Callable[[Sequence[str]], torch.Tensor],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One attribute's probe and open-vocabulary metrics, and its true / predicted cell maps."""
    (train_records, train_x), (test_records, test_x, test_joint) = train, test
    classes = list(task.classnames)
    train_y = train_records.labels(task.name, classes, grid)
    test_y = test_records.labels(task.name, classes, grid)
    n_fit = max(1, len(train_records.records) * 4 // 5)
    width = train_x.shape[-1]
    probe, c = fit_cell_probe(
        train_x[:n_fit].reshape(-1, width),
        train_y[:n_fit].ravel(),
        train_x[n_fit:].reshape(-1, width),
        train_y[n_fit:].ravel(),
    )
    pred = probe.predict(test_x.reshape(-1, width)).reshape(test_y.shape)
    metrics = segmentation_metrics(test_y, pred, ["background", *classes])
    text = class_embeddings(classes, task.templates, text_fn).numpy()
    open_pred = (test_joint @ text.T).argmax(-1) + 1
    objects = test_y > 0
    metrics["open_vocab_object_cell_acc"] = (
        float(np.mean(open_pred[objects] == test_y[objects])) if objects.any() else float("nan")
    )
    metrics.update(C=c, classnames=["background", *classes])
    return metrics, {"true": test_y, "probe": pred, "open_vocab": np.where(objects, open_pred, 0)}


def dense_task(
    req: EvalRequest,
    embedder: Any,
    text_fn: Callable[[Sequence[str]], torch.Tensor],
    zs_tasks: Sequence[ZeroShotTask],
    records: Sequence[Record],
    log: TaskLog,
    dataset_name: str,
) -> tuple[dict[str, Any], Callable[[Path], None] | None]:
    """``(results, picture)``: per attribute the probe's and the open-vocabulary metrics; the maps' drawer."""
    test = _scene_records(records)
    if not test:
        return {"skipped": "the records carry no scene description (objects with boxes); the shapes world's do"}, None
    if getattr(embedder, "encode_cells", None) is None:
        return {"skipped": "the model's image tower gives no per-cell features"}, None
    object_keys = set(test[0].meta["objects"][0]) if test[0].meta["objects"] else set()
    tasks = [t for t in zs_tasks if t.name in object_keys]
    if not tasks:
        return {"skipped": "no zero-shot task names an attribute of the objects"}, None
    limit = req.max_train_records or DEFAULT_TRAIN_RECORDS
    train = _scene_records(first_records(open_split(req, req.train_split), limit))
    if len(train) < 5:
        raise ValueError(f"dense: the {req.train_split!r} split has {len(train)} scene records; the probe needs more")
    train_x, _ = _cells(embedder, train, req.batch_size)
    test_x, test_joint = _cells(embedder, test, req.batch_size)
    grid = grid_side(train_x.shape[1])
    out: dict[str, Any] = {"grid": grid, "min_fraction": DEFAULT_MIN_FRACTION, "n_train_images": len(train)}
    maps: dict[str, np.ndarray] = {}
    train_scenes, test_scenes = Scenes(train), Scenes(test)
    for task in tasks:
        views = (train_scenes, train_x), (test_scenes, test_x, test_joint)
        out[task.name], task_maps = _attribute(task, *views, grid, text_fn)
        log.add("dense", f"{dataset_name}/{task.name}", out[task.name], split=req.split)
        if not maps:
            maps = {key: value[:N_EXAMPLES] for key, value in task_maps.items()}
            keys = [r.key for r in test[:N_EXAMPLES]]
            out["examples"] = {"attribute": task.name, "keys": keys, **{k: v.tolist() for k, v in maps.items()}}
    images: list[Image.Image] = [r.load_image() for r in test[:N_EXAMPLES]]
    names, title = ["background", *tasks[0].classnames], f"Dense probe: {tasks[0].name}"

    def picture(path: Path) -> None:
        plot_dense_maps(images, maps, names, grid, path, title=title)

    return out, picture
