"""Zero-shot classification, with CLIP_benchmark's metric names and definitions.

Class embeddings follow OpenAI's recipe: for class c, embed every template
filled with its name, L2-normalise each, average, and L2-normalise the mean.
Logits are ``image @ classes^T`` (cosine similarities; CLIP's 100x scale does
not change any ranking metric).

Metrics (N labelled images, C classes, ``pred_i`` = top-1 class):

- ``acc1``: fraction of images whose true class is the top-1 logit.
- ``acc5``: fraction whose true class is among the 5 largest logits. As in
  CLIP_benchmark, ``acc5`` is NaN when C < 5 (top-5 of fewer than 5 classes is
  always 1 and says nothing).
- ``mean_per_class_recall``: mean over classes with at least one image of
  recall_c = #{i: y_i = c, pred_i = c} / #{i: y_i = c}
  (= ``sklearn.metrics.balanced_accuracy_score(y, pred)``, CLIP_benchmark's definition).
- ``per_class_recall``: class name -> recall_c (NaN for classes with no image).
- ``confusion_matrix``: C x C list of lists, row = true class, column = predicted class.

Which tasks a dataset's records define (:func:`zeroshot_tasks_for`): the dataset's own
``zeroshot_tasks()``, else one ``classification`` task from integer record labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.records import Dataset, Record, ZeroShotTask
from ..models.embedder import Embedder
from .embedding import TextFn, as_text_fn


def format_template(template: str, classname: str) -> str:
    """Fill ``{c}`` or ``{}`` in ``template`` with ``classname``."""
    if "{c}" not in template and "{}" not in template:
        raise ValueError(f"zero-shot template {template!r} has no '{{}}' or '{{c}}' placeholder")
    return template.replace("{c}", classname).replace("{}", classname)


def class_embeddings(
    classnames: Sequence[str],
    templates: Sequence[str],
    text_fn: Embedder | TextFn,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """C x D class embeddings: normalised mean of the normalised template embeddings of each class."""
    if not classnames:
        raise ValueError("zero-shot: no class names")
    if not templates:
        raise ValueError("zero-shot: no templates")
    fn = as_text_fn(text_fn, batch_size=batch_size, progress=progress)
    prompts = [format_template(t, c) for c in classnames for t in templates]
    emb = F.normalize(fn(prompts).float(), dim=-1)
    emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(emb, dim=-1)


class _Accumulator:
    """Running top-1 / top-k hits and confusion matrix over chunks of logits."""

    def __init__(self, n_classes: int) -> None:
        self.c = n_classes
        self.k5 = min(5, n_classes)
        self.n = self.top1 = self.top5 = 0
        self.confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)

    def add(self, logits: Tensor, labels: Tensor) -> None:
        top = logits.float().topk(self.k5, dim=1).indices
        correct = top.eq(labels.unsqueeze(1))
        self.n += labels.numel()
        self.top1 += int(correct[:, 0].sum())
        self.top5 += int(correct.any(dim=1).sum())
        self.confusion.view(-1).index_add_(0, labels * self.c + top[:, 0], torch.ones_like(labels))

    def result(self, classnames: Sequence[str]) -> dict[str, Any]:
        c, n = self.c, self.n
        support = self.confusion.sum(dim=1)
        diag = self.confusion.diagonal()
        recall = [float(diag[i]) / float(support[i]) if support[i] > 0 else math.nan for i in range(c)]
        present = [r for r in recall if not math.isnan(r)]
        return {
            "acc1": self.top1 / n,
            "acc5": self.top5 / n if c >= 5 else math.nan,
            "mean_per_class_recall": sum(present) / len(present),
            "per_class_recall": dict(zip(_unique_names(classnames), recall)),
            "confusion_matrix": self.confusion.tolist(),
            "classnames": list(classnames),
            "n_samples": n,
            "n_classes": c,
        }


def _check_labels(
    labels: Tensor | Sequence[int], n: int, c: int, classnames: Sequence[str] | None
) -> tuple[Tensor, list[str]]:
    labels = torch.as_tensor(labels, dtype=torch.long).view(-1)
    if labels.numel() != n:
        raise ValueError(f"{n} samples but {labels.numel()} labels")
    if n == 0:
        raise ValueError("no samples")
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(f"labels must lie in [0, {c}), got range [{labels.min()}, {labels.max()}]")
    names = [str(i) for i in range(c)] if classnames is None else list(classnames)
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for {c} classes")
    return labels, names


def zeroshot_metrics(
    logits: Tensor,
    labels: Tensor | Sequence[int],
    classnames: Sequence[str] | None = None,
    *,
    chunk_size: int = 4096,
) -> dict[str, Any]:
    """CLIP_benchmark classification metrics from N x C ``logits`` and N integer ``labels``.

    Top-k is taken per chunk of ``chunk_size`` rows; ties in the logits resolve
    as ``torch.topk`` resolves them (top-1 used for ``acc1`` and the confusion matrix alike).
    """
    n, c = logits.shape
    labels, names = _check_labels(labels, n, c, classnames)
    acc = _Accumulator(c)
    for start in range(0, n, chunk_size):
        acc.add(logits[start : start + chunk_size], labels[start : start + chunk_size])
    return acc.result(names)


def _unique_names(names: Sequence[str]) -> list[str]:
    """Names as dict keys: a repeated name gets its index appended."""
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return [f"{name} [{i}]" if seen[name] > 1 else name for i, name in enumerate(names)]


def evaluate_zeroshot(
    image_emb: Tensor,
    task: ZeroShotTask,
    text_fn: Embedder | TextFn,
    *,
    batch_size: int = 256,
    progress: bool = False,
    chunk_size: int = 4096,
) -> dict[str, Any]:
    """Zero-shot metrics of ``task`` (see module docstring).

    ``image_emb`` has one row per *record* of the dataset (row i = record i);
    the task's ``indices`` select its rows and ``labels`` give their classes.
    ``text_fn`` is an :class:`Embedder` or a ``texts -> N x D`` function (e.g. a
    :class:`~contrastkit.evaluate.embedding.TextEmbeddingCache`; ``batch_size``
    and ``progress`` apply when it is an Embedder). Logits are formed for
    ``chunk_size`` images at a time.
    """
    if len(task.indices) != len(task.labels):
        raise ValueError(f"zero-shot task {task.name!r}: {len(task.indices)} indices but {len(task.labels)} labels")
    idx = torch.as_tensor(task.indices, dtype=torch.long)
    if idx.numel() and (idx.min() < 0 or idx.max() >= image_emb.shape[0]):
        raise ValueError(f"zero-shot task {task.name!r}: record index out of range [0, {image_emb.shape[0]})")
    try:
        labels, names = _check_labels(task.labels, len(task.indices), len(task.classnames), task.classnames)
    except ValueError as err:
        raise ValueError(f"zero-shot task {task.name!r}: {err}") from None
    classes = class_embeddings(task.classnames, task.templates, text_fn, batch_size=batch_size, progress=progress)
    acc = _Accumulator(len(names))
    for start in range(0, idx.numel(), chunk_size):  # logits for chunk_size images at a time
        images = F.normalize(image_emb[idx[start : start + chunk_size]].float(), dim=-1)
        acc.add(images @ classes.T, labels[start : start + chunk_size])
    return acc.result(names)


def restrict_task(task: ZeroShotTask, n: int) -> ZeroShotTask:
    """The task limited to record indices < n."""
    keep = [j for j, i in enumerate(task.indices) if i < n]
    if len(keep) == len(task.indices):
        return task
    return ZeroShotTask(
        task.name,
        list(task.classnames),
        list(task.templates),
        [task.indices[j] for j in keep],
        [task.labels[j] for j in keep],
    )


def zeroshot_tasks_for(
    dataset: Dataset,
    records: Sequence[Record],
    *,
    classnames: list[str] | None = None,
    templates: list[str] | None = None,
    required: bool = False,
) -> list[ZeroShotTask]:
    """The dataset's zero-shot tasks over ``records`` (its first ``len(records)``), with ``classnames`` /
    ``templates`` replacing the task's; a ``classification`` task from integer labels when it defines none.
    ``required``: no task at all is an error."""
    n = len(records)
    tasks = [t for t in (restrict_task(task, n) for task in dataset.zeroshot_tasks()) if t.indices]
    if not tasks:
        labelled = [i for i, r in enumerate(records) if r.label is not None]
        if labelled:
            names = classnames or getattr(dataset, "classnames", None) or getattr(dataset, "classes", None)
            if not names:
                raise ValueError("zero-shot: the records have labels but no class names; give --classnames FILE")
            labels = [int(label) for i in labelled if (label := records[i].label) is not None]
            tasks = [
                ZeroShotTask("classification", list(names), list(templates or ["a photo of a {}."]), labelled, labels)
            ]
    if not tasks:
        if required:
            raise ValueError(
                f"zero-shot: dataset {getattr(dataset, 'name', '?')!r} defines no classification task "
                "and its records have no labels"
            )
        return []
    if classnames is not None:
        if len(tasks) != 1:
            raise ValueError(
                f"--classnames: the dataset defines {len(tasks)} zero-shot tasks "
                f"({', '.join(t.name for t in tasks)}); class names apply to a single task"
            )
        if len(classnames) != len(tasks[0].classnames):
            raise ValueError(
                f"--classnames: {len(classnames)} names for {len(tasks[0].classnames)} classes "
                f"of task {tasks[0].name!r}"
            )
        tasks[0] = ZeroShotTask(tasks[0].name, list(classnames), tasks[0].templates, tasks[0].indices, tasks[0].labels)
    if templates is not None:
        tasks = [ZeroShotTask(t.name, t.classnames, list(templates), t.indices, t.labels) for t in tasks]
    return tasks
