"""The run report: ``report.json``, ``report.md`` and PNG plots in one directory.

:func:`write_report` writes

- ``report.json``: ``zeroshot``, ``retrieval``, ``compositional``, ``geometry``,
  ``config``, ``timing``, every other key of the results, and ``plots`` (plot
  name -> file name). Strictly valid JSON: NaN / inf become ``null``.
- ``report.md``: tables per task, the plots embedded by relative links.
- ``loss_curve.png`` (when a metrics log with ``loss`` and ``step`` is given),
  ``embedding_gap.png`` and ``similarity_hist.png`` (when embeddings are given),
  ``confusion_<task>.png`` for zero-shot tasks of 2 to 40 classes,
  ``per_class_<task>.png`` (per-class recall bars) for zero-shot tasks of 2 to
  100 classes, ``recall_at_k.png`` when the retrieval results carry a
  ``recall_curve``.

Sections beyond the four tasks, when the results have them: ``linear_probe``
(task -> "full" / "<k>-shot" -> metrics), ``compositional_benchmarks`` (set
name -> compositional summary), ``model``, ``feature_cache``, ``skipped``.

The metrics log is JSON Lines, one object per line. Training lines carry
``step`` and ``loss`` (per-term losses as ``loss/<term>`` or ``loss_<term>``).
Evaluation values are numeric keys starting with ``eval/``, ``eval_`` or
``eval.`` on any line with a ``step``, or every numeric key of a line whose
``split`` / ``kind`` / ``phase`` is ``"eval"`` (or ``"val"``). Blank and
unparsable lines are skipped and counted in ``metrics_log_skipped_lines``.

Plots use matplotlib's object API on an Agg canvas (no pyplot, so the global
backend of the caller is left alone).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from torch import Tensor

from .plots import (plot_confusion, plot_embedding_gap, plot_loss_curve, plot_per_class, plot_recall_curve,
                    plot_similarity_hist)

TASK_KEYS = ("zeroshot", "retrieval", "compositional", "geometry")


# ----------------------------------------------------------------------------- JSON


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types from tensors, numpy values, paths, dataclass-free containers; NaN/inf -> None."""
    if isinstance(obj, Tensor):
        obj = obj.detach().cpu()
        return to_jsonable(obj.item() if obj.ndim == 0 else obj.tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    return str(obj)


def read_metrics_log(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """(objects, number of skipped lines) of a JSON Lines metrics log."""
    rows: list[dict[str, Any]] = []
    skipped = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1  # e.g. the half-written last line of a killed run
                continue
            if isinstance(obj, dict):
                rows.append(obj)
            else:
                skipped += 1
    return rows, skipped


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, bool) or isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _pct(v: Any) -> str:
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "—"
    return f"{100 * v:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return lines + [""]


_GEOMETRY_NOTES = {
    "modality_gap": "distance between image and text centroids (0 = no gap)",
    "centroid_cosine": "cosine of the two centroids",
    "centroid_mse": "gap² / D",
    "mean_positive_cosine": "matched pairs",
    "mean_negative_cosine": "unmatched pairs",
    "alignment": "mean ‖x_i − y_i‖² over matched pairs (lower = better aligned)",
    "uniformity_image": "log E exp(−2‖u−v‖²), images (lower = more uniform)",
    "uniformity_text": "log E exp(−2‖u−v‖²), texts (lower = more uniform)",
    "linear_separability": "held-out accuracy telling image from text (chance 0.5)",
    "effective_rank_image": "exp entropy of singular values, images",
    "effective_rank_text": "exp entropy of singular values, texts",
    "temperature": "tau of the temperature diagnostics (the model's own when known)",
    "hardness_top1": "share of the negative gradient on the hardest negative (1/(N-1) if all equal)",
    "hardness_top10": "share of the negative gradient on the 10 hardest negatives",
    "effective_negatives": "exp entropy of the negative weights (N-1 if all equal, 1 if one dominates)",
    "effective_negatives_fraction": "effective negatives / (N-1)",
    "tolerance_image": "mean cosine of same-class image pairs (1 = classes collapsed)",
    "tolerance_text": "mean cosine of same-class caption pairs",
    "n_labelled": "pairs with a class label (for the tolerance)",
    "tolerance_labels": "zero-shot task whose classes the tolerance uses",
}


def render_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown text of a report dict (as written to report.json, with ``plots``)."""
    plots: Mapping[str, str] = report.get("plots", {})
    out: list[str] = ["# Evaluation report", ""]
    model = report.get("model")
    if isinstance(model, Mapping) and model.get("name"):
        line = f"model: **{model['name']}**"
        if model.get("pretrained"):
            line += f" · pretrained: `{model['pretrained']}`"
        if isinstance(model.get("logit_scale"), (int, float)):
            line += f" · logit scale: {_fmt(model['logit_scale'], 2)}"
        out += [line, ""]
    facts = [f"{k}: **{_fmt(report[k])}**" for k in ("dataset", "split", "n_images", "n_captions", "n_unique_texts")
             if report.get(k) is not None]
    if facts:
        out += [" · ".join(facts), ""]
    skipped = report.get("skipped") or {}
    for task, why in skipped.items():
        out += [f"_Skipped {task}: {why}._", ""]

    zs = report.get("zeroshot") or {}
    out += ["## Zero-shot classification", ""]
    if zs:
        out += ["Accuracies in %. acc5 is blank for tasks with fewer than 5 classes (as in CLIP_benchmark).", ""]
        out += _table(["task", "images", "classes", "acc1", "acc5", "mean per-class recall"],
                      [[name, _fmt(m.get("n_samples")), _fmt(m.get("n_classes")), _pct(m.get("acc1")),
                        _pct(m.get("acc5")), _pct(m.get("mean_per_class_recall"))] for name, m in zs.items()])
        for name, m in zs.items():
            recall = m.get("per_class_recall") or {}
            conf = m.get("confusion_matrix") or []
            if recall and len(recall) <= 40:
                support = [sum(r) for r in conf] if conf else [None] * len(recall)
                out += [f"### {name}: per-class recall", ""]
                out += _table(["class", "images", "recall (%)"],
                              [[c, _fmt(s), _pct(r)] for (c, r), s in zip(recall.items(), support)])
            if f"confusion/{name}" in plots:
                out += [f"![confusion matrix, {name}]({plots[f'confusion/{name}']})", ""]
            if f"per_class/{name}" in plots:
                out += [f"![per-class recall, {name}]({plots[f'per_class/{name}']})", ""]
    else:
        out += ["_No zero-shot tasks._", ""]

    rt = report.get("retrieval") or {}
    out += ["## Retrieval", ""]
    ks = sorted({int(k.split("@")[1]) for k in rt if k.startswith(("image_retrieval_recall@", "text_retrieval_recall@"))})
    if ks:
        out += [f"Recall@k in % over {_fmt(rt.get('n_texts'))} captions of {_fmt(rt.get('n_images'))} images. "
                "Text→image = `image_retrieval_recall@k` (each caption finds its image); "
                "image→text = `text_retrieval_recall@k` (each image finds any of its captions).", ""]
        out += _table(["k", "text→image", "image→text"],
                      [[k, _pct(rt.get(f"image_retrieval_recall@{k}")), _pct(rt.get(f"text_retrieval_recall@{k}"))]
                       for k in ks])
        if "recall_at_k" in plots:
            out += [f"![recall@k curves]({plots['recall_at_k']})", ""]
    else:
        out += ["_No retrieval results._", ""]

    probe = report.get("linear_probe") or {}
    if probe:
        out += ["## Linear probe", "",
                "Logistic regression on frozen image embeddings; C chosen on a validation split. Accuracies in %.", ""]
        rows = []
        for task, per_k in probe.items():
            for label, m in (per_k or {}).items():
                c = m.get("C")
                rows.append([task, label, _fmt(m.get("n_train")), f"{c:.3g}" if isinstance(c, (int, float)) else "—",
                             _pct(m.get("acc1")),
                             _pct(m.get("acc5")), _pct(m.get("mean_per_class_recall"))])
        out += _table(["task", "training data", "train examples", "C", "acc1", "acc5", "mean per-class recall"],
                      rows)

    comp = report.get("compositional") or {}
    out += ["## Compositional (caption vs minimal edit)", ""]
    acc = comp.get("accuracy") or {}
    if acc:
        n_pairs = comp.get("n_pairs") or {}
        out += ["Accuracy in %: the image must score its caption strictly above the edited negative (chance 50).", ""]
        rows = [[cat, _fmt(n_pairs.get(cat)), _pct(a)] for cat, a in acc.items()]
        rows.append(["**macro mean**", _fmt(comp.get("n_pairs_total")), f"**{_pct(comp.get('macro_accuracy'))}**"])
        rows.append(["micro mean (all pairs)", _fmt(comp.get("n_pairs_total")), _pct(comp.get("micro_accuracy"))])
        out += _table(["category", "pairs", "accuracy"], rows)
    elif not report.get("compositional_benchmarks"):
        out += ["_No records with negative captions._", ""]
    for bench, summary in (report.get("compositional_benchmarks") or {}).items():
        acc = (summary or {}).get("accuracy") or {}
        n_pairs = (summary or {}).get("n_pairs") or {}
        out += [f"### {bench}", "",
                "Accuracy in %: the true caption must score strictly above every false one (chance 50).", ""]
        rows = [[cat, _fmt(n_pairs.get(cat)), _pct(a)] for cat, a in acc.items()]
        rows.append(["**macro mean**", _fmt(summary.get("n_pairs_total")), f"**{_pct(summary.get('macro_accuracy'))}**"])
        rows.append(["micro mean (all items)", _fmt(summary.get("n_pairs_total")), _pct(summary.get("micro_accuracy"))])
        out += _table(["category", "items", "accuracy"], rows)

    geo = report.get("geometry") or {}
    out += ["## Embedding geometry", ""]
    if geo:
        if geo.get("n_pairs") is not None:
            out += [f"Image embeddings vs embeddings of their first caption ({_fmt(geo.get('n_pairs'))} pairs, "
                    f"dimension {_fmt(geo.get('dim'))}).", ""]
        out += _table(["metric", "value", "meaning"],
                      [[k, _fmt(v), _GEOMETRY_NOTES.get(k, "")] for k, v in geo.items() if k not in ("n_pairs", "dim")])
    else:
        out += ["_No geometry results._", ""]
    for key, caption in (("embedding_gap", "joint PCA of image and text embeddings"),
                         ("similarity_hist", "matched vs unmatched cosine similarity")):
        if key in plots:
            out += [f"![{caption}]({plots[key]})", ""]

    if "loss_curve" in plots:
        out += ["## Training", "", f"![training loss and evaluation metrics]({plots['loss_curve']})", ""]

    timing = report.get("timing") or {}
    if timing:
        out += ["## Timing", ""]
        out += _table(["what", "value"], [[k, _fmt(v, 2)] for k, v in _flatten(timing).items()])

    cache = report.get("feature_cache") or {}
    if cache:
        out += ["## Feature cache", ""]
        out += _table(["what", "value"], [[k, _fmt(v)] for k, v in cache.items()])
    files = report.get("result_files") or []
    if files:
        out += ["## Result files (CLIP_benchmark format)", ""] + [f"- [{f}]({f})" for f in files] + [""]

    known = set(TASK_KEYS) | {"config", "timing", "plots", "dataset", "n_images", "n_captions", "n_unique_texts",
                              "linear_probe", "compositional_benchmarks", "model", "feature_cache", "skipped",
                              "result_files", "split"}
    extra = {k: v for k, v in report.items() if k not in known}
    if extra:
        out += ["## Other results", ""]
        out += _table(["key", "value"], [[k, _fmt(v)] for k, v in _flatten(extra).items()])

    config = report.get("config") or {}
    if config:
        out += ["## Config", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    return "\n".join(out)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            flat[key] = json.dumps(v) if len(v) <= 8 else f"[{len(v)} items]"
        else:
            flat[key] = v
    return flat


# ----------------------------------------------------------------------------- entry point


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "task"


def write_report(
    run_dir: str | Path,
    results: Mapping[str, Any],
    *,
    config: Mapping[str, Any] | None = None,
    timing: Mapping[str, Any] | None = None,
    metrics_log: str | Path | None = None,
    image_emb: Tensor | None = None,
    text_emb: Tensor | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Write report.json, report.md and plots into ``run_dir`` (created if needed); return the report dict.

    ``plots=False`` writes the JSON and the Markdown only.

    ``results`` is typically :func:`~contrastkit.evaluate.suite.run_suite`'s
    dict. ``image_emb`` / ``text_emb`` (row i matched to row i) enable the
    embedding-gap and similarity plots; ``metrics_log`` (JSON Lines) the loss curve.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {key: results.get(key) or {} for key in TASK_KEYS}
    report["config"] = dict(config) if config else {}
    report["timing"] = dict(timing) if timing else {}
    for key, value in results.items():
        if key not in report:
            report[key] = value
    want_plots = plots
    written: dict[str, str] = {}  # plot name -> file name

    if metrics_log is not None:
        rows, skipped = read_metrics_log(metrics_log)
        if skipped:
            report["metrics_log_skipped_lines"] = skipped
        if want_plots and plot_loss_curve(rows, run_dir / "loss_curve.png"):
            written["loss_curve"] = "loss_curve.png"

    if want_plots and image_emb is not None and text_emb is not None:
        plot_embedding_gap(image_emb, text_emb, run_dir / "embedding_gap.png")
        written["embedding_gap"] = "embedding_gap.png"
        if image_emb.shape == text_emb.shape and image_emb.shape[0] >= 2:
            plot_similarity_hist(image_emb, text_emb, run_dir / "similarity_hist.png")
            written["similarity_hist"] = "similarity_hist.png"

    for name, metrics in (report["zeroshot"] or {}).items() if want_plots else ():
        conf = metrics.get("confusion_matrix") if isinstance(metrics, Mapping) else None
        if conf and 2 <= len(conf) <= 40:
            fname = f"confusion_{_slug(name)}.png"
            while fname in written.values():
                fname = fname[:-4] + "_.png"
            plot_confusion(conf, metrics.get("classnames") or [str(i) for i in range(len(conf))], run_dir / fname,
                           title=f"Zero-shot confusion matrix: {name}")
            written[f"confusion/{name}"] = fname

    for name, metrics in (report["zeroshot"] or {}).items() if want_plots else ():
        recall = metrics.get("per_class_recall") if isinstance(metrics, Mapping) else None
        if recall and 2 <= len(recall) <= 100:
            fname = f"per_class_{_slug(name)}.png"
            while fname in written.values():
                fname = fname[:-4] + "_.png"
            plot_per_class(recall, run_dir / fname, title=f"Zero-shot per-class recall: {name}")
            written[f"per_class/{name}"] = fname

    curve = (report["retrieval"] or {}).get("recall_curve") if isinstance(report["retrieval"], Mapping) else None
    if want_plots and curve and curve.get("k"):
        plot_recall_curve(curve, run_dir / "recall_at_k.png")
        written["recall_at_k"] = "recall_at_k.png"

    report["plots"] = written
    report = to_jsonable(report)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (run_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report
