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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from .plots import (
    plot_confusion,
    plot_embedding_gap,
    plot_loss_curve,
    plot_per_class,
    plot_recall_curve,
    plot_similarity_hist,
)
from .report_markdown import TASK_KEYS, render_markdown

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
    figures: Mapping[str, Callable[[Path], None]] | None = None,
) -> dict[str, Any]:
    """Write report.json, report.md and plots into ``run_dir`` (created if needed); return the report dict.

    ``plots=False`` writes the JSON and the Markdown only.

    ``results`` is typically :func:`~contrastkit.evaluate.suite.run_suite`'s
    dict. ``image_emb`` / ``text_emb`` (row i matched to row i) enable the
    embedding-gap and similarity plots; ``metrics_log`` (JSON Lines) the loss curve; ``figures``
    (name -> a function drawing a PNG at the path it is given, e.g. the dense probe's maps) more pictures.
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

    if want_plots:
        _zeroshot_plots(report["zeroshot"] or {}, run_dir, written)

    curve = (report["retrieval"] or {}).get("recall_curve") if isinstance(report["retrieval"], Mapping) else None
    if want_plots and curve and curve.get("k"):
        plot_recall_curve(curve, run_dir / "recall_at_k.png")
        written["recall_at_k"] = "recall_at_k.png"

    for name, draw in (figures or {}).items() if want_plots else ():
        draw(run_dir / f"{name}.png")
        written[name] = f"{name}.png"

    report["plots"] = written
    report = to_jsonable(report)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (run_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return report


def _zeroshot_plots(zeroshot: Mapping[str, Any], run_dir: Path, written: dict[str, str]) -> None:
    """A confusion matrix and a per-class recall bar chart per zero-shot task, named into ``written``."""
    for name, metrics in zeroshot.items():
        conf = metrics.get("confusion_matrix") if isinstance(metrics, Mapping) else None
        if conf and 2 <= len(conf) <= 40:
            fname = f"confusion_{_slug(name)}.png"
            while fname in written.values():
                fname = fname[:-4] + "_.png"
            plot_confusion(
                conf,
                metrics.get("classnames") or [str(i) for i in range(len(conf))],
                run_dir / fname,
                title=f"Zero-shot confusion matrix: {name}",
            )
            written[f"confusion/{name}"] = fname

    for name, metrics in zeroshot.items():
        recall = metrics.get("per_class_recall") if isinstance(metrics, Mapping) else None
        if recall and 2 <= len(recall) <= 100:
            fname = f"per_class_{_slug(name)}.png"
            while fname in written.values():
                fname = fname[:-4] + "_.png"
            plot_per_class(recall, run_dir / fname, title=f"Zero-shot per-class recall: {name}")
            written[f"per_class/{name}"] = fname
