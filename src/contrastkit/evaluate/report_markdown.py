"""``report.md``: a report dict as Markdown, one section per task (tables in %, plots linked)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

TASK_KEYS = ("zeroshot", "retrieval", "compositional", "geometry")
TEXT_KEYS = ("sts", "text_retrieval", "text_classification", "text_geometry")


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (bool, int)):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _pct(v: Any) -> str:
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "—"
    return f"{100 * v:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731 - a one-line cell escape, local to this table
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
    if any(report.get(key) for key in TEXT_KEYS):  # a text model's evaluation
        return "\n".join(_header(report) + _text_tasks(report) + _training_and_more(report, plots))
    out = _header(report) + _zeroshot(report, plots) + _retrieval(report, plots) + _linear_probe(report)
    out += _dense(report, plots)
    out += _compositional(report) + _geometry(report, plots) + _training_and_more(report, plots)
    return "\n".join(out)


def _text_tasks(report: Mapping[str, Any]) -> list[str]:
    """STS per set, text retrieval and text geometry tables."""
    out: list[str] = []
    sts = report.get("sts") or {}
    if sts:
        out += [
            "## Semantic textual similarity",
            "",
            "Spearman / Pearson correlation of cosine with the gold scores; alignment over the pairs scored at least "
            "0.8 x the top score, uniformity over every sentence of the set (SimCSE's protocol).",
            "",
        ]
        keys = ("spearman_cosine", "pearson_cosine", "alignment", "uniformity", "pairs")
        out += _table(["set", *keys], [[name, *(_fmt(m.get(k)) for k in keys)] for name, m in sts.items()])
    retrieval = report.get("text_retrieval") or {}
    if retrieval:
        out += ["## Text retrieval", "", "Each anchor a query, the distinct positives the corpus.", ""]
        out += _table(["metric", "value"], [[k, _fmt(v)] for k, v in retrieval.items()])
    classification = report.get("text_classification") or {}
    if classification:
        out += [
            "## Text classification by label contrast",
            "",
            "Each input's class: the nearest class description.",
            "",
        ]
        out += _table(["metric", "value"], [[k, _fmt(v)] for k, v in classification.items()])
    geometry = report.get("text_geometry") or {}
    if geometry:
        out += ["## Text embedding geometry", ""]
        out += _table(
            ["metric", "value", "meaning"], [[k, _fmt(v), _TEXT_GEOMETRY_NOTES.get(k, "")] for k, v in geometry.items()]
        )
    return out


_TEXT_GEOMETRY_NOTES = {
    "alignment": "mean squared distance of anchor and positive (lower: pairs closer)",
    "uniformity": "log mean exp(-2 d^2) over all texts (lower: more spread)",
    "anisotropy": "mean cosine between distinct texts (0: no shared direction)",
}


def _header(report: Mapping[str, Any]) -> list[str]:
    """Title, model, dataset facts and skipped tasks."""
    out: list[str] = []
    out += ["# Evaluation report", ""]
    model = report.get("model")
    if isinstance(model, Mapping) and model.get("name"):
        line = f"model: **{model['name']}**"
        if model.get("pretrained"):
            line += f" · pretrained: `{model['pretrained']}`"
        if isinstance(model.get("logit_scale"), (int, float)):
            line += f" · logit scale: {_fmt(model['logit_scale'], 2)}"
        out += [line, ""]
    facts = [
        f"{k}: **{_fmt(report[k])}**"
        for k in ("dataset", "split", "n_images", "n_captions", "n_unique_texts")
        if report.get(k) is not None
    ]
    if facts:
        out += [" · ".join(facts), ""]
    skipped = report.get("skipped") or {}
    for task, why in skipped.items():
        out += [f"_Skipped {task}: {why}._", ""]
    for warning in report.get("warnings") or []:
        out += [f"**Warning:** {warning}.", ""]
    return out


def _zeroshot(report: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    """Zero-shot table, per-class recall and the confusion / per-class plots."""
    out: list[str] = []
    zs = report.get("zeroshot") or {}
    out += ["## Zero-shot classification", ""]
    if zs:
        out += ["Accuracies in %. acc5 is blank for tasks with fewer than 5 classes (as in CLIP_benchmark).", ""]
        out += _table(
            ["task", "images", "classes", "acc1", "acc5", "mean per-class recall"],
            [
                [
                    name,
                    _fmt(m.get("n_samples")),
                    _fmt(m.get("n_classes")),
                    _pct(m.get("acc1")),
                    _pct(m.get("acc5")),
                    _pct(m.get("mean_per_class_recall")),
                ]
                for name, m in zs.items()
            ],
        )
        for name, m in zs.items():
            recall = m.get("per_class_recall") or {}
            conf = m.get("confusion_matrix") or []
            if recall and len(recall) <= 40:
                support = [sum(r) for r in conf] if conf else [None] * len(recall)
                out += [f"### {name}: per-class recall", ""]
                out += _table(
                    ["class", "images", "recall (%)"],
                    [[c, _fmt(s), _pct(r)] for (c, r), s in zip(recall.items(), support)],
                )
            if f"confusion/{name}" in plots:
                out += [f"![confusion matrix, {name}]({plots[f'confusion/{name}']})", ""]
            if f"per_class/{name}" in plots:
                out += [f"![per-class recall, {name}]({plots[f'per_class/{name}']})", ""]
    else:
        out += ["_No zero-shot tasks._", ""]
    return out


def _retrieval(report: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    """Recall@k table and curve."""
    out: list[str] = []
    rt = report.get("retrieval") or {}
    out += ["## Retrieval", ""]
    ks = sorted(
        {int(k.split("@")[1]) for k in rt if k.startswith(("image_retrieval_recall@", "text_retrieval_recall@"))}
    )
    if ks:
        out += [
            f"Recall@k in % over {_fmt(rt.get('n_texts'))} captions of {_fmt(rt.get('n_images'))} images. "
            "Text→image = `image_retrieval_recall@k` (each caption finds its image); "
            "image→text = `text_retrieval_recall@k` (each image finds any of its captions).",
            "",
        ]
        out += _table(
            ["k", "text→image", "image→text"],
            [[k, _pct(rt.get(f"image_retrieval_recall@{k}")), _pct(rt.get(f"text_retrieval_recall@{k}"))] for k in ks],
        )
        if "recall_at_k" in plots:
            out += [f"![recall@k curves]({plots['recall_at_k']})", ""]
    else:
        out += ["_No retrieval results._", ""]
    return out


def _linear_probe(report: Mapping[str, Any]) -> list[str]:
    """Linear-probe table (when the evaluation ran one)."""
    out: list[str] = []
    probe = report.get("linear_probe") or {}
    if probe:
        out += [
            "## Linear probe",
            "",
            "Logistic regression on frozen image embeddings; C chosen on a validation split. Accuracies in %.",
            "",
        ]
        rows = []
        for task, per_k in probe.items():
            for label, m in (per_k or {}).items():
                c = m.get("C")
                rows.append(
                    [
                        task,
                        label,
                        _fmt(m.get("n_train")),
                        f"{c:.3g}" if isinstance(c, (int, float)) else "—",
                        _pct(m.get("acc1")),
                        _pct(m.get("acc5")),
                        _pct(m.get("mean_per_class_recall")),
                    ]
                )
        out += _table(["task", "training data", "train examples", "C", "acc1", "acc5", "mean per-class recall"], rows)
    return out


def _dense(report: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    """Dense probe per attribute (when the evaluation ran it): probe cells, mIoU, open vocabulary."""
    dense = report.get("dense") or {}
    if not dense or "skipped" in dense:
        return [f"## Dense probe\n\n_Skipped: {dense['skipped']}._", ""] if dense else []
    out = [
        "## Dense probe",
        "",
        f"Frozen cell features on a {dense.get('grid')} x {dense.get('grid')} grid; a cell's class is the object "
        f"covering >= {100 * float(dense.get('min_fraction', 0)):.0f}% of it, else background. Linear probe trained on "
        f"{dense.get('n_train_images')} train images; open vocabulary: cell embeddings against the class prompts.",
        "",
    ]
    rows = [
        [
            name,
            _pct(m.get("cell_acc")),
            _pct(m.get("object_cell_acc")),
            _pct(m.get("miou")),
            _pct(m.get("open_vocab_object_cell_acc")),
            _fmt(m.get("n_object_cells")),
        ]
        for name, m in dense.items()
        if isinstance(m, Mapping) and "miou" in m
    ]
    header = ["attribute", "cell acc", "object-cell acc", "mIoU", "open-vocab object-cell acc", "object cells"]
    out += _table(header, rows)
    if "dense_maps" in plots:
        out += [f"![dense probe maps]({plots['dense_maps']})", ""]
    return out


def _compositional(report: Mapping[str, Any]) -> list[str]:
    """Caption-vs-edit accuracy, the records' and the benchmark sets'."""
    out: list[str] = []
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
        out += [
            f"### {bench}",
            "",
            "Accuracy in %: the true caption must score strictly above every false one (chance 50).",
            "",
        ]
        rows = [[cat, _fmt(n_pairs.get(cat)), _pct(a)] for cat, a in acc.items()]
        rows.append(
            ["**macro mean**", _fmt(summary.get("n_pairs_total")), f"**{_pct(summary.get('macro_accuracy'))}**"]
        )
        rows.append(["micro mean (all items)", _fmt(summary.get("n_pairs_total")), _pct(summary.get("micro_accuracy"))])
        out += _table(["category", "items", "accuracy"], rows)
    return out


def _geometry(report: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    """Geometry table with what each number means, and its plots."""
    out: list[str] = []
    geo = report.get("geometry") or {}
    out += ["## Embedding geometry", ""]
    if geo:
        if geo.get("n_pairs") is not None:
            out += [
                f"Image embeddings vs embeddings of their first caption ({_fmt(geo.get('n_pairs'))} pairs, "
                f"dimension {_fmt(geo.get('dim'))}).",
                "",
            ]
        out += _table(
            ["metric", "value", "meaning"],
            [[k, _fmt(v), _GEOMETRY_NOTES.get(k, "")] for k, v in geo.items() if k not in ("n_pairs", "dim")],
        )
    else:
        out += ["_No geometry results._", ""]
    for key, caption in (
        ("embedding_gap", "joint PCA of image and text embeddings"),
        ("similarity_hist", "matched vs unmatched cosine similarity"),
    ):
        if key in plots:
            out += [f"![{caption}]({plots[key]})", ""]
    return out


def _training_and_more(report: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    """Loss curve, timing, feature cache, result files, other results, config."""
    out: list[str] = []
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

    known = (
        set(TASK_KEYS)
        | set(TEXT_KEYS)
        | {
            "config",
            "timing",
            "plots",
            "dataset",
            "n_images",
            "n_captions",
            "n_unique_texts",
            "linear_probe",
            "dense",
            "compositional_benchmarks",
            "model",
            "feature_cache",
            "skipped",
            "warnings",
            "result_files",
            "split",
        }
    )
    extra = {k: v for k, v in report.items() if k not in known}
    if extra:
        out += ["## Other results", ""]
        out += _table(["key", "value"], [[k, _fmt(v)] for k, v in _flatten(extra).items()])

    config = report.get("config") or {}
    if config:
        out += ["## Config", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    return out


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
