"""Evaluate an embedder on a dataset: every task the records support, in one pass.

Each record's image is embedded once (``record.load_image()``, ``batch_size``
at a time); every distinct text string (captions, negatives, zero-shot
prompts) is embedded once. Then:

- ``zeroshot``: task name -> :func:`~contrastkit.evaluate.zeroshot.evaluate_zeroshot`
  metrics, for each of ``dataset.zeroshot_tasks()`` (restricted to the records
  evaluated; a task left with no record is omitted);
- ``retrieval``: :func:`~contrastkit.evaluate.retrieval.retrieval_metrics` over all
  captions of all records;
- ``compositional``: :func:`~contrastkit.evaluate.compositional.evaluate_compositional`
  over records' ``neg_captions``;
- ``geometry``: :func:`~contrastkit.evaluate.geometry.geometry_metrics` of the image
  embeddings against the embeddings of each record's ``captions[0]``, the
  temperature diagnostics at ``temperature`` (default 0.07) and the tolerance
  over the classes of the first zero-shot task (records outside it unlabelled);
- ``n_images``, ``n_captions``, ``n_unique_texts``, ``dataset`` (its name) and
  ``eval_seconds`` (wall time of image embedding, text embedding, metrics).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from ..data.records import Dataset, Record, ZeroShotTask
from .compositional import evaluate_compositional, record_pairs
from .embedder import Embedder, TextEmbeddingCache, embed_images
from .geometry import geometry_metrics
from .retrieval import retrieval_metrics
from .zeroshot import evaluate_zeroshot, format_template


@dataclass
class EvaluationOutput:
    """Results plus the embeddings behind them (for plots and further analysis).

    ``image_emb[i]`` embeds record i's image, ``text_emb[i]`` its ``captions[0]``.
    """

    results: dict[str, Any]
    image_emb: Tensor
    text_emb: Tensor


def _restrict(task: ZeroShotTask, n: int) -> ZeroShotTask:
    """The task limited to record indices < n."""
    keep = [j for j, i in enumerate(task.indices) if i < n]
    if len(keep) == len(task.indices):
        return task
    return ZeroShotTask(task.name, list(task.classnames), list(task.templates),
                        [task.indices[j] for j in keep], [task.labels[j] for j in keep])


def evaluate_dataset_with_embeddings(
    embedder: Embedder,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    max_records: int | None = None,
    progress: bool = True,
    seed: int = 0,
    temperature: float | None = None,
    curve_ks: Sequence[int] | None = None,
    num_workers: int = 0,
) -> EvaluationOutput:
    """Like :func:`evaluate_dataset`, also returning the image and first-caption embeddings.

    ``temperature`` is the tau of the geometry's temperature diagnostics,
    ``curve_ks`` adds a recall@k curve to the retrieval results, ``num_workers``
    DataLoader workers load images for embedders that support it.
    """
    n = len(dataset) if max_records is None else min(len(dataset), max_records)
    if n < 1:
        raise ValueError(f"dataset {getattr(dataset, 'name', '?')!r}: no records to evaluate")
    records: list[Record] = [dataset[i] for i in range(n)]
    for i, rec in enumerate(records):
        if not rec.captions:
            raise ValueError(f"record {rec.key or i}: has no caption")
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    image_emb = embed_images(embedder, [rec.load_image for rec in records], batch_size=batch_size,
                             progress=progress, num_workers=num_workers)
    seconds["embed_images"] = time.perf_counter() - t0

    tasks = [t for t in (_restrict(task, n) for task in dataset.zeroshot_tasks()) if t.indices]
    captions = [c for rec in records for c in rec.captions]
    _, _, negatives, _ = record_pairs(records)
    prompts = [format_template(tpl, c) for task in tasks for c in task.classnames for tpl in task.templates]
    cache = TextEmbeddingCache(embedder, batch_size=batch_size, progress=progress)
    t0 = time.perf_counter()
    cache.prefetch(captions + negatives + prompts)
    seconds["embed_texts"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    zeroshot = {task.name: evaluate_zeroshot(image_emb, task, cache) for task in tasks}
    text_to_image = [i for i, rec in enumerate(records) for _ in rec.captions]
    retrieval = retrieval_metrics(image_emb, cache(captions), text_to_image, curve_ks=curve_ks)
    compositional = evaluate_compositional(image_emb, records, cache)
    text_emb = cache([rec.captions[0] for rec in records])
    labels = None
    if tasks:
        labels = torch.full((n,), -1, dtype=torch.long)
        labels[torch.as_tensor(tasks[0].indices, dtype=torch.long)] = torch.as_tensor(tasks[0].labels)
    geometry = geometry_metrics(image_emb, text_emb, seed=seed, temperature=temperature, labels=labels)
    if labels is not None:
        geometry["tolerance_labels"] = tasks[0].name
    seconds["metrics"] = time.perf_counter() - t0

    results: dict[str, Any] = {
        "zeroshot": zeroshot,
        "retrieval": retrieval,
        "compositional": compositional,
        "geometry": geometry,
        "n_images": n,
        "n_captions": len(captions),
        "n_unique_texts": len(cache),
        "dataset": getattr(dataset, "name", type(dataset).__name__),
        "eval_seconds": seconds,
    }
    return EvaluationOutput(results=results, image_emb=image_emb, text_emb=text_emb)


def evaluate_dataset(
    embedder: Embedder,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    max_records: int | None = None,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Zero-shot, retrieval, compositional and geometry results of ``embedder`` on ``dataset``.

    Evaluates the first ``max_records`` records (all by default), calling the
    embedder ``batch_size`` items at a time; ``progress`` shows tqdm bars;
    ``seed`` fixes the linear-separability split. See the module docstring for
    the keys of the returned dict.
    """
    return evaluate_dataset_with_embeddings(
        embedder, dataset, batch_size=batch_size, max_records=max_records, progress=progress, seed=seed,
    ).results
