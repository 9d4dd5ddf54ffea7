"""Every evaluation task on any loaded model, with cached features: the engine of ``contrastkit eval``.

    from contrastkit.evaluate.suite import EvalRequest, run_suite, write_suite
    from contrastkit.evaluate.cache import FeatureCache
    from contrastkit.models.external import load_model

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
  per k of ``fewshot`` (:mod:`~contrastkit.evaluate.linear_probe`); results
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
:class:`~contrastkit.evaluate.embedder.TextEmbeddingCache`). Without a cache the
same happens within the one run.

Output (:func:`write_suite`): ``report.json`` / ``report.md`` / PNG plots of
:func:`~contrastkit.evaluate.report.write_report`, and ``results/<task>_<dataset>.json``
per task in CLIP_benchmark's format: ``dataset``, ``model``, ``pretrained``,
``task`` (``zeroshot_classification``, ``zeroshot_retrieval``,
``linear_probe``, ``compositional``, ``geometry``), ``metrics``, ``language``
(``"en"``), plus ``split`` and ``model_fingerprint``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..data.records import Record, ZeroShotTask
from .cache import FeatureCache, record_identity, records_key
from .compositional import evaluate_choices, evaluate_compositional, record_pairs
from .embedder import TextEmbeddingCache, embed_images
from .geometry import geometry_metrics
from .linear_probe import linear_probe
from .retrieval import CURVE_KS, DEFAULT_KS, retrieval_metrics
from .runner import _restrict
from .zeroshot import evaluate_zeroshot, format_template

TASKS = ("zeroshot", "retrieval", "linear_probe", "compositional", "geometry")
DEFAULT_TASKS = ("zeroshot", "retrieval", "compositional", "geometry")
BENCHMARK_TASK = {"zeroshot": "zeroshot_classification", "retrieval": "zeroshot_retrieval",
                  "linear_probe": "linear_probe", "compositional": "compositional", "geometry": "geometry"}


def parse_tasks(spec: str | Sequence[str]) -> list[str]:
    """``"all"``, ``"default"`` or a comma-separated subset of :data:`TASKS` -> task list."""
    names = [s.strip() for part in ([spec] if isinstance(spec, str) else spec) for s in part.split(",") if s.strip()]
    out: list[str] = []
    for name in names:
        expand = TASKS if name == "all" else DEFAULT_TASKS if name == "default" else (name,)
        for task in expand:
            if task not in TASKS:
                raise ValueError(f"--task: unknown task {task!r}; choose from {', '.join(TASKS)}, default, all")
            if task not in out:
                out.append(task)
    return out or list(DEFAULT_TASKS)


@dataclass
class EvalRequest:
    """What to evaluate (see the module docstring); paths may be str or Path."""

    tasks: Sequence[str] = DEFAULT_TASKS
    data: str | None = None  # data spec (open_eval_data); None: no dataset (compositional benchmarks only)
    split: str = "test"
    data_config: Any = None  # a DataConfig (the run's, for contrastkit runs); None: defaults
    max_records: int | None = None
    classnames: list[str] | None = None
    templates: list[str] | None = None
    train_split: str = "train"
    val_split: str | None = None
    max_train_records: int | None = None
    fewshot: Sequence[int] = ()
    probe_max_iter: int = 1000
    sugarcrepe: Sequence[str | Path] = ()
    aro: Sequence[str | Path] = ()
    images: str | Path | None = None  # image root of the sugarcrepe / aro files
    recall_ks: Sequence[int] = DEFAULT_KS
    curve_ks: Sequence[int] = CURVE_KS
    temperature: float | None = None
    hardness_ks: Sequence[int] = (1, 10)
    tie_tol: float = 1e-6
    batch_size: int = 256
    num_workers: int = 0
    progress: bool = True
    seed: int = 0
    dataset: Any = None  # an already opened dataset (API use); overrides ``data``


@dataclass
class SuiteOutput:
    results: dict[str, Any]
    task_results: list[dict[str, Any]]
    image_emb: Tensor | None = None  # matched pairs (captioned records) for the plots
    text_emb: Tensor | None = None
    model: dict[str, Any] = field(default_factory=dict)


class Features:
    """A model's embeddings of image sets and strings, through the feature cache when there is one."""

    def __init__(self, model: Any, cache: FeatureCache | None, *, batch_size: int, num_workers: int,
                 progress: bool) -> None:
        self.model = model
        self.cache = cache
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.progress = progress
        self._key: str | None = None
        store = cache.text_store(self.model_key) if cache is not None else None
        self.texts = TextEmbeddingCache(model.embedder, batch_size=batch_size, progress=progress, store=store)
        self.seconds = 0.0

    @property
    def model_key(self) -> str:
        if self._key is None:
            self._key = self.model.fingerprint(self.cache)
            if self.cache is not None:
                self.cache.describe_model(self._key, {"kind": self.model.kind, "name": self.model.name,
                                                      "pretrained": self.model.pretrained, "info": self.model.info})
        return self._key

    def images(self, loaders: Sequence[Callable[[], Any]], identities: Sequence[Any], describe: dict[str, Any],
               desc: str = "embed images") -> Tensor:
        t0 = time.perf_counter()

        def compute() -> Tensor:
            return embed_images(self.model.embedder, list(loaders), batch_size=self.batch_size,
                                progress=self.progress, desc=desc, num_workers=self.num_workers)

        if self.cache is None:
            emb = compute()
        else:
            key = records_key(identities, {"kind": "images"})
            emb = self.cache.images(self.model_key, key, compute, describe={**describe, "n": len(loaders)})
        self.seconds += time.perf_counter() - t0
        return emb

    def record_images(self, records: Sequence[Record], describe: dict[str, Any]) -> Tensor:
        return self.images([r.load_image for r in records], [record_identity(r) for r in records], describe,
                           desc=f"embed {describe.get('split', '')} images".replace("  ", " "))


# ----------------------------------------------------------------------------- data helpers


def _open(spec: str, split: str, req: EvalRequest) -> Any:
    from .inputs import open_eval_data

    return open_eval_data(spec, split, req.data_config)


def _records(dataset: Any, limit: int | None) -> list[Record]:
    n = len(dataset) if limit is None else min(len(dataset), limit)
    return [dataset[i] for i in range(n)]


def zeroshot_tasks_for(dataset: Any, records: Sequence[Record], req: EvalRequest, *, required: bool
                       ) -> list[ZeroShotTask]:
    """The dataset's zero-shot tasks over ``records`` with ``req``'s class names / templates applied."""
    n = len(records)
    tasks = [t for t in (_restrict(task, n) for task in dataset.zeroshot_tasks()) if t.indices]
    if not tasks:
        labelled = [i for i, r in enumerate(records) if r.label is not None]
        if labelled:
            names = req.classnames or getattr(dataset, "classnames", None) or getattr(dataset, "classes", None)
            if not names:
                raise ValueError("zero-shot: the records have labels but no class names; give --classnames FILE")
            tasks = [ZeroShotTask("classification", list(names), list(req.templates or ["a photo of a {}."]),
                                  labelled, [int(records[i].label) for i in labelled])]  # type: ignore[arg-type]
    if not tasks:
        if required:
            raise ValueError(f"zero-shot: dataset {getattr(dataset, 'name', '?')!r} defines no classification task "
                             "and its records have no labels")
        return []
    if req.classnames is not None:
        if len(tasks) != 1:
            raise ValueError(f"--classnames: the dataset defines {len(tasks)} zero-shot tasks "
                             f"({', '.join(t.name for t in tasks)}); class names apply to a single task")
        if len(req.classnames) != len(tasks[0].classnames):
            raise ValueError(f"--classnames: {len(req.classnames)} names for {len(tasks[0].classnames)} classes "
                             f"of task {tasks[0].name!r}")
        tasks[0] = ZeroShotTask(tasks[0].name, list(req.classnames), tasks[0].templates, tasks[0].indices,
                                tasks[0].labels)
    if req.templates is not None:
        tasks = [ZeroShotTask(t.name, t.classnames, list(req.templates), t.indices, t.labels) for t in tasks]
    return tasks


def _task_dataset_name(dataset_name: str, task: str, n_tasks: int) -> str:
    return dataset_name if n_tasks == 1 else f"{dataset_name}/{task}"


# ----------------------------------------------------------------------------- the suite


def run_suite(model: Any, req: EvalRequest, cache: FeatureCache | None = None) -> SuiteOutput:
    """Run ``req.tasks`` on ``model`` (a :class:`~contrastkit.models.external.LoadedModel`)."""
    tasks = parse_tasks(list(req.tasks))
    feats = Features(model, cache, batch_size=req.batch_size, num_workers=req.num_workers, progress=req.progress)
    seconds: dict[str, float] = {}
    results: dict[str, Any] = {}
    task_results: list[dict[str, Any]] = []
    model_info = {"name": model.name, "pretrained": model.pretrained, "kind": model.kind,
                  "logit_scale": model.logit_scale, "logit_bias": model.logit_bias}

    def dump(task: str, dataset_name: str, metrics: dict[str, Any], **extra: Any) -> None:
        task_results.append({"dataset": dataset_name, "model": model.name, "pretrained": model.pretrained,
                             "task": BENCHMARK_TASK[task], "metrics": metrics, "language": "en", **extra})

    dataset = req.dataset
    if dataset is None and req.data is not None:
        dataset = _open(req.data, req.split, req)
    needs_data = [t for t in tasks if t != "compositional"]
    if dataset is None and needs_data:
        raise ValueError(f"tasks {', '.join(needs_data)} need a dataset: give --data SPEC")
    if dataset is None and not (req.sugarcrepe or req.aro):
        raise ValueError("nothing to evaluate: give --data SPEC, --sugarcrepe or --aro")

    if (req.sugarcrepe or req.aro) and "compositional" not in tasks:
        raise ValueError("--sugarcrepe / --aro are inputs of the compositional task: add it to --task")
    pair_img = pair_txt = None
    if dataset is not None:
        ds_name = str(getattr(dataset, "name", type(dataset).__name__))
        records = _records(dataset, req.max_records)
        if not records:
            raise ValueError(f"dataset {ds_name!r}: no records to evaluate")
        describe = {"data": req.data or ds_name, "split": req.split, "dataset": ds_name}
        image_emb = feats.record_images(records, describe)
        # Labelled tasks (zero-shot, probe, tolerance); an error only when zero-shot is all that was asked for.
        zs_tasks = zeroshot_tasks_for(dataset, records, req, required=tasks == ["zeroshot"])
        captions = [c for rec in records for c in rec.captions]
        _, _, negatives, _ = record_pairs(records) if "compositional" in tasks else ([], [], [], [])
        prompts = [format_template(t, c) for task in (zs_tasks if "zeroshot" in tasks else [])
                   for c in task.classnames for t in task.templates]
        t0 = time.perf_counter()
        wanted = captions if "retrieval" in tasks else [r.captions[0] for r in records if r.captions]
        feats.texts.prefetch(wanted + negatives + prompts)
        seconds["embed_texts"] = time.perf_counter() - t0
        dn = lambda task: _task_dataset_name(ds_name, task, len(zs_tasks))  # noqa: E731
        results.update({"dataset": ds_name, "split": req.split, "n_images": len(records),
                        "n_captions": len(captions)})

        t0 = time.perf_counter()
        if "zeroshot" in tasks:
            results["zeroshot"] = {}
            for task in zs_tasks:
                metrics = evaluate_zeroshot(image_emb, task, feats.texts)
                results["zeroshot"][task.name] = metrics
                dump("zeroshot", dn(task.name), metrics, split=req.split, templates=task.templates)
            if not zs_tasks:
                results.setdefault("skipped", {})["zeroshot"] = "the data defines no labelled task"
        if "retrieval" in tasks:
            if captions:
                t2i = [i for i, rec in enumerate(records) for _ in rec.captions]
                metrics = retrieval_metrics(image_emb, feats.texts(captions), t2i, ks=req.recall_ks,
                                            curve_ks=req.curve_ks)
                results["retrieval"] = metrics
                dump("retrieval", ds_name, metrics, split=req.split)
            else:
                results.setdefault("skipped", {})["retrieval"] = "the records have no captions"
        if "compositional" in tasks:
            comp = evaluate_compositional(image_emb, records, feats.texts, tol=req.tie_tol)
            results["compositional"] = comp
            if comp["n_pairs_total"]:
                dump("compositional", ds_name, comp, split=req.split)
        captioned = [i for i, rec in enumerate(records) if rec.captions]
        if len(captioned) >= 1:
            pair_img = image_emb[torch.as_tensor(captioned)]
            pair_txt = feats.texts([records[i].captions[0] for i in captioned])
        if "geometry" in tasks:
            if pair_img is not None and pair_txt is not None:
                labels = torch.full((len(records),), -1, dtype=torch.long)
                if zs_tasks:
                    labels[torch.as_tensor(zs_tasks[0].indices)] = torch.as_tensor(zs_tasks[0].labels)
                lab = labels[torch.as_tensor(captioned)]
                geo = geometry_metrics(pair_img, pair_txt, seed=req.seed,
                                       temperature=req.temperature or model.temperature,
                                       hardness_ks=req.hardness_ks, labels=lab if (lab >= 0).any() else None)
                if zs_tasks and (lab >= 0).any():
                    geo["tolerance_labels"] = zs_tasks[0].name
                results["geometry"] = geo
                dump("geometry", ds_name, geo, split=req.split)
            else:
                results.setdefault("skipped", {})["geometry"] = "the records have no captions to pair with"
        seconds["metrics"] = time.perf_counter() - t0

        if "linear_probe" in tasks:
            t0 = time.perf_counter()
            results["linear_probe"] = _linear_probe(req, feats, zs_tasks, image_emb, dump, dn, records)
            seconds["linear_probe"] = time.perf_counter() - t0

    if "compositional" in tasks and (req.sugarcrepe or req.aro):
        from .inputs import read_aro, read_sugarcrepe

        if req.images is None:
            raise ValueError("--sugarcrepe / --aro need --images DIR (the folder their image paths are relative to)")
        t0 = time.perf_counter()
        bench: dict[str, Any] = {}
        for name, reader, paths in (("sugarcrepe", read_sugarcrepe, req.sugarcrepe), ("aro", read_aro, req.aro)):
            if not paths:
                continue
            items = reader(list(paths), req.images)

            def image_fn(loaders: list[Any], idents: list[Any], _name: str = name) -> Tensor:
                return feats.images(loaders, idents, {"data": _name, "images": str(req.images)},
                                    desc=f"embed {_name} images")

            summary = evaluate_choices(model.embedder, items, tol=req.tie_tol, text_fn=feats.texts,
                                       image_fn=image_fn)
            bench[name] = summary
            dump("compositional", name, summary)
        results["compositional_benchmarks"] = bench
        seconds["compositional_benchmarks"] = time.perf_counter() - t0

    seconds["embed_images_or_cache"] = feats.seconds
    results["n_unique_texts"] = len(feats.texts)
    results["model"] = model_info
    if cache is not None:
        results["feature_cache"] = {"dir": str(cache.root), "model_key": feats.model_key[:24],
                                    "image_sets_from_cache": cache.hits, "image_sets_computed": cache.misses,
                                    "texts_from_cache": feats.texts.n_from_store,
                                    "texts_embedded": feats.texts.n_embedded}
    results["eval_seconds"] = seconds
    fingerprint = feats.model_key if cache is not None else None
    for entry in task_results:
        entry["model_fingerprint"] = fingerprint
    return SuiteOutput(results, task_results, pair_img, pair_txt, model_info)


def _record_key(rec: Record) -> str:
    """What identifies a record across splits: its key, else its image path (in-memory images: unique)."""
    if rec.key:
        return f"key:{rec.key}"
    return f"path:{rec.image}" if not hasattr(rec.image, "tobytes") else f"object:{id(rec.image)}"


def _linear_probe(req: EvalRequest, feats: Features, test_tasks: Sequence[ZeroShotTask], test_emb: Tensor,
                  dump: Callable[..., None], dn: Callable[[str], str], test_records: Sequence[Record]
                  ) -> dict[str, Any]:
    if req.data is None and req.dataset is None:
        raise ValueError("linear_probe needs --data SPEC with a train split")
    if not test_tasks:
        raise ValueError("linear_probe: the evaluated split defines no labelled task")
    if req.data is None:
        raise ValueError("linear_probe: give the data as a spec (--data) so its train split can be opened")

    test_keys = {_record_key(r) for r in test_records}

    def split_features(split: str) -> tuple[dict[str, ZeroShotTask], Tensor]:
        ds = _open(req.data, split, req)  # type: ignore[arg-type]
        records = _records(ds, req.max_train_records)
        shared = sum(_record_key(r) in test_keys for r in records)
        if shared > 0.5 * min(len(records), len(test_keys)):
            raise ValueError(
                f"linear_probe: {shared} of the {len(records)} records of the {split!r} split are also in the "
                f"{req.split!r} split (a source without splits serves every split whole); give split files "
                "({split} in the spec) or a hash split (--set data.test_fraction=0.2 --set data.val_fraction=0.1)")
        tasks = zeroshot_tasks_for(ds, records, EvalRequest(classnames=req.classnames), required=False)
        emb = feats.record_images(records, {"data": req.data, "split": split, "dataset": getattr(ds, "name", "")})
        return {t.name: t for t in tasks}, emb

    train_tasks, train_emb = split_features(req.train_split)
    val_tasks, val_emb = split_features(req.val_split) if req.val_split else ({}, None)
    out: dict[str, Any] = {}
    for task in test_tasks:
        tr = train_tasks.get(task.name)
        if tr is None:
            continue
        if len(tr.classnames) != len(task.classnames):
            raise ValueError(f"linear_probe {task.name!r}: {len(tr.classnames)} classes in the "
                             f"{req.train_split} split but {len(task.classnames)} in {req.split}")
        va = val_tasks.get(task.name)
        per_k: dict[str, Any] = {}
        for k in [None, *req.fewshot]:
            metrics = linear_probe(
                train_emb[torch.as_tensor(tr.indices)], tr.labels,
                test_emb[torch.as_tensor(task.indices)], task.labels,
                val_x=val_emb[torch.as_tensor(va.indices)] if va is not None and val_emb is not None else None,
                val_y=va.labels if va is not None else None,
                classnames=task.classnames, fewshot_k=k, seed=req.seed, max_iter=req.probe_max_iter)
            label = "full" if k is None else f"{k}-shot"
            per_k[label] = metrics
            dump("linear_probe", dn(task.name), metrics, split=req.split, fewshot_k=k,
                 train_split=req.train_split)
        out[task.name] = per_k
    if not out:
        raise ValueError(f"linear_probe: the {req.train_split} split shares no labelled task with {req.split} "
                         f"({', '.join(t.name for t in test_tasks)})")
    return out


# ----------------------------------------------------------------------------- output


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "data"


def write_suite(out_dir: str | Path, output: SuiteOutput, *, config: dict[str, Any] | None = None,
                plots: bool = True) -> dict[str, Any]:
    """Write the report (JSON, Markdown, plots unless ``plots`` is False) and ``results/<task>_<dataset>.json``."""
    from .report import to_jsonable, write_report

    out_dir = Path(out_dir)
    results_dir = out_dir / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    for entry in output.task_results:
        name = f"{entry['task']}_{_slug(entry['dataset'])}"
        if entry.get("fewshot_k") is not None:
            name += f"_{entry['fewshot_k']}shot"
        fname = f"{name}.json"
        while fname in files:
            fname = fname[:-5] + "_.json"
        files.append(fname)
        (results_dir / fname).write_text(json.dumps(to_jsonable(entry), indent=2, allow_nan=False) + "\n")
    results = {**output.results, "result_files": [f"results/{f}" for f in files]}
    return write_report(out_dir, results, config=config, image_emb=output.image_emb, text_emb=output.text_emb,
                        plots=plots)
