"""Every evaluation task on any loaded model, with cached features: the one evaluation orchestrator.

Training-time evaluation (``engine/evaluation.py``), ``contrastkit eval`` and
:func:`evaluate_dataset` all run :func:`run_suite`::

    from contrastkit.evaluate.suite import EvalRequest, run_suite
    from contrastkit.evaluate.result_files import write_suite
    from contrastkit.evaluate.cache import FeatureCache
    from contrastkit.models.load import load_model

    model = load_model("open_clip:ViT-B-32", pretrained="vit_b32.safetensors")
    out = run_suite(model, EvalRequest(tasks=["zeroshot", "retrieval"], data="images/val",
                                       templates=read_templates("openai_imagenet")), cache=FeatureCache())
    write_suite("eval-out", out)

Tasks (``EvalRequest.tasks``):

- ``zeroshot``: every zero-shot task of the data (``dataset.zeroshot_tasks()``,
  or one ``classification`` task from the records' integer ``label`` s), class
  names / templates replaced by ``classnames`` / ``templates`` when given;
  metrics of :mod:`~contrastkit.evaluate.zeroshot`.
- ``retrieval``: all captions of all records (:mod:`~contrastkit.evaluate.retrieval`),
  with a recall@k curve.
- ``linear_probe``: for each zero-shot task that the ``train_split`` (and
  ``val_split``, if given) also defines, a probe on all training data and one
  per k of ``fewshot`` (:mod:`~contrastkit.evaluate.probe_task`); results
  ``linear_probe[task]["full" | "<k>-shot"]``.
- ``compositional``: the records' hard-negative captions (``compositional``),
  and SugarCrepe / ARO-style sets (``compositional_benchmarks["sugarcrepe" | "aro"]``).
- ``geometry``: :func:`~contrastkit.evaluate.geometry.geometry_metrics` of
  each captioned record's image against its first caption, at the model's own
  temperature (``temperature`` overrides), with the first zero-shot task's
  labels for the tolerance.

Features: every image set (the evaluated split, the probe's train / val
splits, the compositional images) is embedded once per model and read back
from the :class:`~contrastkit.evaluate.cache.FeatureCache` on later runs;
every distinct string likewise (a store-backed
:class:`~contrastkit.evaluate.embedding.TextEmbeddingCache`). Without a cache the
same happens within the one run.

Output (:func:`~contrastkit.evaluate.result_files.write_suite`): ``report.json`` /
``report.md`` / PNG plots, and ``results/<task>_<dataset>.json`` per task in
CLIP_benchmark's format: ``dataset``, ``model``, ``pretrained``, ``task``
(``zeroshot_classification``, ``zeroshot_retrieval``, ``linear_probe``,
``compositional``, ``geometry``), ``metrics``, ``language`` (``"en"``), plus
``split`` and ``model_fingerprint``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..data.records import Dataset, Record
from ..models.embedder import Embedder
from ..models.loaded import LoadedModel
from .benchmark_files import read_aro, read_sugarcrepe
from .cache import FeatureCache
from .class_coverage import coverage_warning, unseen_classnames
from .compositional import evaluate_choices, evaluate_compositional, record_pairs
from .dense_task import dense_task
from .features import Features
from .geometry import geometry_metrics
from .probe_task import linear_probe_task
from .request import (
    BENCHMARK_TASK,
    DEFAULT_TASKS,
    IMAGE_TASKS,
    TASKS,
    EvalRequest,
    SuiteOutput,
    TaskLog,
    first_records,
    open_split,
    parse_tasks,
)
from .retrieval import retrieval_metrics
from .text_suite import TEXT_TASKS, run_text_tasks, sts_specs
from .zeroshot import evaluate_zeroshot, format_template, zeroshot_tasks_for

__all__ = [
    "BENCHMARK_TASK",
    "DEFAULT_TASKS",
    "TASKS",
    "EvalRequest",
    "SuiteOutput",
    "evaluate_dataset",
    "evaluate_dataset_with_embeddings",
    "parse_tasks",
    "run_suite",
]


def run_suite(model: LoadedModel, req: EvalRequest, cache: FeatureCache | None = None) -> SuiteOutput:
    """Run ``req.tasks`` on ``model`` (see the module docstring)."""
    tasks = parse_tasks(list(req.tasks))
    feats = Features(model, cache, batch_size=req.batch_size, num_workers=req.num_workers, progress=req.progress)
    out = SuiteOutput(
        {},
        [],
        model={
            "name": model.name,
            "pretrained": model.pretrained,
            "kind": model.kind,
            "logit_scale": model.logit_scale,
            "logit_bias": model.logit_bias,
        },
    )
    log = TaskLog(model, out.task_results)
    seconds: dict[str, float] = {}
    dataset = req.dataset
    if dataset is None and req.data is not None:
        dataset = open_split(req, req.split)
    tasks = _tasks_for(tasks, req, dataset)
    text_tasks = [t for t in tasks if t in TEXT_TASKS]
    if text_tasks:
        t0 = time.perf_counter()
        run_text_tasks(dataset, text_tasks, req, feats.texts, log, out)
        seconds["text_tasks"] = time.perf_counter() - t0
    elif dataset is not None:
        _dataset_tasks(dataset, tasks, req, feats, log, out, seconds)
    if "compositional" in tasks and (req.sugarcrepe or req.aro):
        t0 = time.perf_counter()
        out.results["compositional_benchmarks"] = _benchmark_sets(req, feats, log)
        seconds["compositional_benchmarks"] = time.perf_counter() - t0

    seconds["embed_images_or_cache"] = feats.seconds
    out.results["n_unique_texts"] = len(feats.texts)
    out.results["model"] = out.model
    if cache is not None:
        out.results["feature_cache"] = {
            "dir": str(cache.root),
            "model_key": feats.model_key[:24],
            "image_sets_from_cache": cache.hits,
            "image_sets_computed": cache.misses,
            "texts_from_cache": feats.texts.n_from_store,
            "texts_embedded": feats.texts.n_embedded,
        }
    out.results["eval_seconds"] = seconds
    fingerprint = feats.model_key if cache is not None else None
    for entry in out.task_results:
        entry["model_fingerprint"] = fingerprint
    return out


def _tasks_for(tasks: list[str], req: EvalRequest, dataset: Dataset | None) -> list[str]:
    """The tasks to run: a text-pair dataset's default is the text tasks; image and text tasks do not mix."""
    text_pairs = bool(getattr(dataset, "text_pairs", False))
    if text_pairs and tuple(tasks) in (DEFAULT_TASKS, IMAGE_TASKS):  # the text tasks it can run
        labelled = bool(getattr(dataset, "classnames", None))
        tasks = [
            t
            for t in TEXT_TASKS
            if (t != "sts" or sts_specs(req, dataset)) and (t != "text_classification" or labelled)
        ]
    image_tasks = [t for t in tasks if t not in TEXT_TASKS]
    if image_tasks and (text_pairs or len(image_tasks) < len(tasks)):
        raise ValueError(
            f"tasks {', '.join(image_tasks)} need images; text pairs and STS files take {', '.join(TEXT_TASKS)}"
        )
    needs_data = [t for t in tasks if t not in ("compositional", "sts")]
    if dataset is None and needs_data:
        raise ValueError(f"tasks {', '.join(needs_data)} need a dataset: give --data SPEC")
    if dataset is None and not (req.sugarcrepe or req.aro or req.sts):
        raise ValueError("nothing to evaluate: give --data SPEC, --sugarcrepe, --aro or --sts")
    if (req.sugarcrepe or req.aro) and "compositional" not in tasks:
        raise ValueError("--sugarcrepe / --aro are inputs of the compositional task: add it to --task")
    if req.sts and "sts" not in tasks:
        raise ValueError("--sts names inputs of the sts task: add it to --task")
    return tasks


def _dataset_tasks(
    dataset: Dataset,
    tasks: list[str],
    req: EvalRequest,
    feats: Features,
    log: TaskLog,
    out: SuiteOutput,
    seconds: dict[str, float],
) -> None:
    """Every asked task that reads the evaluated split: each image embedded once, each string once."""
    ds_name = str(getattr(dataset, "name", type(dataset).__name__))
    records = first_records(dataset, req.max_records)
    if not records:
        raise ValueError(f"dataset {ds_name!r}: no records to evaluate")
    image_emb = feats.record_images(records, {"data": req.data or ds_name, "split": req.split, "dataset": ds_name})
    # Labelled tasks (zero-shot, probe, tolerance); an error only when zero-shot is all that was asked for.
    zs_tasks = zeroshot_tasks_for(
        dataset, records, classnames=req.classnames, templates=req.templates, required=tasks == ["zeroshot"]
    )
    captions = [c for rec in records for c in rec.captions]
    _, _, negatives, _ = record_pairs(records) if "compositional" in tasks else ([], [], [], [])
    prompts = [
        format_template(t, c)
        for task in (zs_tasks if "zeroshot" in tasks else [])
        for c in task.classnames
        for t in task.templates
    ]
    t0 = time.perf_counter()
    wanted = captions if "retrieval" in tasks else [r.captions[0] for r in records if r.captions]
    feats.texts.prefetch(wanted + negatives + prompts)
    seconds["embed_texts"] = time.perf_counter() - t0

    def task_dataset(task: str) -> str:
        return ds_name if len(zs_tasks) == 1 else f"{ds_name}/{task}"

    results = out.results
    results.update({"dataset": ds_name, "split": req.split, "n_images": len(records), "n_captions": len(captions)})
    t0 = time.perf_counter()
    if "zeroshot" in tasks:
        results["zeroshot"] = {}
        for task in zs_tasks:
            results["zeroshot"][task.name] = metrics = evaluate_zeroshot(image_emb, task, feats.texts)
            log.add("zeroshot", task_dataset(task.name), metrics, split=req.split, templates=task.templates)
        if not zs_tasks:
            results.setdefault("skipped", {})["zeroshot"] = "the data defines no labelled task"
        if req.training_captions is not None:
            results["warnings"] = [
                coverage_warning(task.name, unseen, len(task.classnames), len(req.training_captions))
                for task in zs_tasks
                if (unseen := unseen_classnames(task.classnames, req.training_captions))
            ]
    if "retrieval" in tasks:
        if captions:
            t2i = [i for i, rec in enumerate(records) for _ in rec.captions]
            results["retrieval"] = metrics = retrieval_metrics(
                image_emb, feats.texts(captions), t2i, ks=req.recall_ks, curve_ks=req.curve_ks
            )
            log.add("retrieval", ds_name, metrics, split=req.split)
        else:
            results.setdefault("skipped", {})["retrieval"] = "the records have no captions"
    if "compositional" in tasks:
        results["compositional"] = comp = evaluate_compositional(image_emb, records, feats.texts, tol=req.tie_tol)
        if comp["n_pairs_total"]:
            log.add("compositional", ds_name, comp, split=req.split)
    _pairs_and_geometry(records, image_emb, zs_tasks, "geometry" in tasks, req, feats, log, out, ds_name)
    seconds["metrics"] = time.perf_counter() - t0
    if "linear_probe" in tasks:
        t0 = time.perf_counter()
        results["linear_probe"] = linear_probe_task(req, feats, zs_tasks, image_emb, log, task_dataset, records)
        seconds["linear_probe"] = time.perf_counter() - t0
    if "dense" in tasks:
        t0 = time.perf_counter()
        results["dense"], picture = dense_task(req, feats.model.embedder, feats.texts, zs_tasks, records, log, ds_name)
        if picture is not None:
            out.figures["dense_maps"] = picture
        seconds["dense"] = time.perf_counter() - t0


def _pairs_and_geometry(
    records: Sequence[Record],
    image_emb: Tensor,
    zs_tasks: Sequence[Any],
    geometry: bool,
    req: EvalRequest,
    feats: Features,
    log: TaskLog,
    out: SuiteOutput,
    ds_name: str,
) -> None:
    """The matched (image, first caption) embeddings for the plots, and the geometry task on them."""
    captioned = [i for i, rec in enumerate(records) if rec.captions]
    if captioned:
        out.image_emb = image_emb[torch.as_tensor(captioned)]
        out.text_emb = feats.texts([records[i].captions[0] for i in captioned])
    if not geometry:
        return
    if out.image_emb is None or out.text_emb is None:
        out.results.setdefault("skipped", {})["geometry"] = "the records have no captions to pair with"
        return
    labels = torch.full((len(records),), -1, dtype=torch.long)
    if zs_tasks:
        labels[torch.as_tensor(zs_tasks[0].indices)] = torch.as_tensor(zs_tasks[0].labels)
    lab = labels[torch.as_tensor(captioned)]
    geo = geometry_metrics(
        out.image_emb,
        out.text_emb,
        seed=req.seed,
        temperature=req.temperature or feats.model.temperature,
        hardness_ks=req.hardness_ks,
        labels=lab if (lab >= 0).any() else None,
    )
    if zs_tasks and (lab >= 0).any():
        geo["tolerance_labels"] = zs_tasks[0].name
    out.results["geometry"] = geo
    log.add("geometry", ds_name, geo, split=req.split)


def _benchmark_sets(req: EvalRequest, feats: Features, log: TaskLog) -> dict[str, Any]:
    """SugarCrepe / ARO-style sets: per-category accuracy of the true caption over its negatives."""
    if req.images is None:
        raise ValueError("--sugarcrepe / --aro need --images DIR (the folder their image paths are relative to)")
    bench: dict[str, Any] = {}
    for name, reader, paths in (("sugarcrepe", read_sugarcrepe, req.sugarcrepe), ("aro", read_aro, req.aro)):
        if not paths:
            continue
        items = reader(list(paths), req.images)

        def image_fn(loaders: list[Any], idents: list[Any], _name: str = name) -> Tensor:
            return feats.images(
                loaders, lambda: idents, {"data": _name, "images": str(req.images)}, desc=f"embed {_name} images"
            )

        bench[name] = summary = evaluate_choices(
            feats.model.embedder, items, tol=req.tie_tol, text_fn=feats.texts, image_fn=image_fn
        )
        log.add("compositional", name, summary)
    return bench


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
) -> SuiteOutput:
    """The default tasks of any :class:`~contrastkit.models.embedder.Embedder` on ``dataset`` (no cache).

    ``out.results`` as :func:`run_suite`'s; ``out.image_emb[i]`` embeds record i's image and
    ``out.text_emb[i]`` its first caption. ``temperature`` is the tau of the geometry's
    temperature diagnostics (0.07 when None), ``curve_ks`` adds a recall@k curve.
    """
    req = EvalRequest(
        tasks=DEFAULT_TASKS,
        dataset=dataset,
        max_records=max_records,
        curve_ks=tuple(curve_ks or ()),
        temperature=temperature,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        seed=seed,
    )
    return run_suite(LoadedModel.of_embedder(embedder), req)


def evaluate_dataset(
    embedder: Embedder,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    max_records: int | None = None,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Zero-shot, retrieval, compositional and geometry results of ``embedder`` on ``dataset`` (see above)."""
    return evaluate_dataset_with_embeddings(
        embedder, dataset, batch_size=batch_size, max_records=max_records, progress=progress, seed=seed
    ).results
