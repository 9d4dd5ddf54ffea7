"""An evaluation's headline numbers: terminal lines and the metrics-log entries of a quick validation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SUMMARY_RECALL = ("image_retrieval_recall@1", "text_retrieval_recall@1")
TEXT_SUMMARY = ("cosine_accuracy@1", "cosine_mrr@10", "cosine_ndcg@10")


def _pct(v: Any) -> str:
    return f"{100 * v:5.1f}%" if isinstance(v, (int, float)) and math.isfinite(v) else "    —"


def summarize_results(res: Mapping[str, Any], split: str | None = None, *, with_model: bool = True) -> str:
    """Plain-text lines with the headline numbers of an evaluation's results, for the terminal.

    ``with_model``: start with the model's name (off for a training run's own report).
    """
    model = res.get("model") if with_model else None
    head = f"evaluation on {res['dataset']}" if res.get("dataset") else "evaluation"
    if split or res.get("split"):
        head += f" [{split or res.get('split')}]"
    if res.get("n_images") is not None:
        head += f", {res['n_images']} images"
    if isinstance(model, Mapping) and model.get("name"):
        head = f"{model['name']}: " + head
    lines = [head]
    for task, metrics in (res.get("zeroshot") or {}).items():
        lines.append(
            f"  zero-shot {task:<28} acc1 {_pct(metrics.get('acc1'))}  acc5 {_pct(metrics.get('acc5'))}  "
            f"mean-per-class recall {_pct(metrics.get('mean_per_class_recall'))}"
        )
    retrieval = res.get("retrieval") or {}
    for key in SUMMARY_RECALL:
        if key in retrieval:
            lines.append(f"  {key:<38} {_pct(retrieval[key])}")
    for task, per_k in (res.get("linear_probe") or {}).items():
        for label, m in per_k.items():
            lines.append(
                f"  linear probe {task} ({label}){'':<{max(0, 22 - len(task) - len(label))}} "
                f"acc1 {_pct(m.get('acc1'))}  C {m.get('C', float('nan')):.3g}"
            )
    for cat, acc in ((res.get("compositional") or {}).get("accuracy") or {}).items():
        lines.append(f"  compositional {cat:<24} {_pct(acc)}")
    for bench, summary in (res.get("compositional_benchmarks") or {}).items():
        for cat, acc in (summary.get("accuracy") or {}).items():
            lines.append(f"  {bench} {cat:<{max(1, 37 - len(bench))}} {_pct(acc)}")
        lines.append(f"  {bench} macro mean{'':<{max(1, 27 - len(bench))}} {_pct(summary.get('macro_accuracy'))}")
    geometry = res.get("geometry") or {}
    if "modality_gap" in geometry:
        lines.append(f"  modality gap (centroid distance)       {geometry['modality_gap']:.3f}")
    if isinstance(geometry.get("effective_negatives"), (int, float)) and math.isfinite(geometry["effective_negatives"]):
        lines.append(
            f"  effective negatives at tau {geometry.get('temperature', float('nan')):.3g}"
            f"{'':<8}{geometry['effective_negatives']:.1f} of {max(0, int(geometry.get('n_pairs', 1)) - 1)}"
        )
    for name, metrics in (res.get("sts") or {}).items():
        lines.append(
            f"  STS {name:<34} spearman {metrics.get('spearman_cosine', float('nan')):.4f}  "
            f"pearson {metrics.get('pearson_cosine', float('nan')):.4f}"
        )
    text_retrieval = res.get("text_retrieval") or {}
    for key in TEXT_SUMMARY:
        if key in text_retrieval:
            lines.append(f"  text retrieval {key:<23} {text_retrieval[key]:.4f}")
    if "acc1" in (res.get("text_classification") or {}):
        lines.append(f"  text classification by label contrast   acc1 {_pct(res['text_classification']['acc1'])}")
    for key, value in (res.get("text_geometry") or {}).items():
        lines.append(f"  text {key:<33} {value:.4f}")
    cache = res.get("feature_cache")
    if isinstance(cache, Mapping):
        lines.append(
            f"  feature cache: {cache.get('image_sets_from_cache', 0)} image set(s) read, "
            f"{cache.get('image_sets_computed', 0)} computed; {cache.get('texts_from_cache', 0)} texts read, "
            f"{cache.get('texts_embedded', 0)} embedded ({cache.get('dir')})"
        )
    lines += [f"  WARNING: {warning}" for warning in res.get("warnings") or []]
    return "\n".join(lines)


def headline_metrics(res: Mapping[str, Any], prefix: str = "val") -> dict[str, float]:
    """A few headline numbers for the metrics log: zero-shot acc1 per task, recall@1, gap; STS, text retrieval."""
    flat: dict[str, float] = {}
    for task, metrics in (res.get("zeroshot") or {}).items():
        flat[f"{prefix}/zeroshot/{task}/acc1"] = float(metrics["acc1"])
    for key in SUMMARY_RECALL:
        if key in (res.get("retrieval") or {}):
            flat[f"{prefix}/{key}"] = float(res["retrieval"][key])
    if "modality_gap" in (res.get("geometry") or {}):
        flat[f"{prefix}/modality_gap"] = float(res["geometry"]["modality_gap"])
    for name, metrics in (res.get("sts") or {}).items():
        flat[f"{prefix}/sts/{name}/spearman_cosine"] = float(metrics["spearman_cosine"])
    for key in TEXT_SUMMARY:
        if key in (res.get("text_retrieval") or {}):
            flat[f"{prefix}/text_retrieval/{key}"] = float(res["text_retrieval"][key])
    if "acc1" in (res.get("text_classification") or {}):
        flat[f"{prefix}/text_classification/acc1"] = float(res["text_classification"]["acc1"])
    if "anisotropy" in (res.get("text_geometry") or {}):
        flat[f"{prefix}/text_anisotropy"] = float(res["text_geometry"]["anisotropy"])
    return flat
