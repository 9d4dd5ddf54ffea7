"""Two evaluation reports side by side: ``contrastkit eval --compare A B``.

A and B may each be a ``report.json`` file, a folder holding one (an
evaluation's ``--out`` folder, or a run directory: training writes its final
report there), or a run directory with ``eval-<split>`` sub-folders (the newest
``eval-*/report.json`` is used when the run directory itself has no report).

Compared values: every number in the report's task sections (``zeroshot``,
``retrieval``, ``linear_probe``, ``compositional``, ``compositional_benchmarks``,
``geometry``), flattened to dotted names (``zeroshot.shape.acc1``). Per-class
values, confusion matrices, counts (``n_*``) and the recall curve are left out
unless ``detail=True``. Rows present in only one report show ``—`` on the other side.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SECTIONS = ("zeroshot", "retrieval", "linear_probe", "compositional", "compositional_benchmarks", "geometry")
DETAIL_PARTS = ("per_class_recall", "confusion_matrix", "recall_curve", "val_acc1", "classnames")


def find_report(path: str | Path) -> Path:
    """The report.json that ``path`` names (see the module docstring)."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / "report.json").is_file():
        return path / "report.json"
    candidates = sorted(path.glob("eval-*/report.json"), key=lambda p: p.stat().st_mtime)
    if candidates:
        return candidates[-1]
    raise FileNotFoundError(f"--compare: no report.json in {path} (nor in {path}/eval-*/)")


def load_report(path: str | Path) -> dict[str, Any]:
    report_path = find_report(path)
    data = json.loads(report_path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"--compare: {report_path} is not a report (expected a JSON object)")
    data["_path"] = str(report_path)
    return data


def _flatten(obj: Any, prefix: str, detail: bool, out: dict[str, float]) -> None:
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            key = str(key)
            if not detail and (key in DETAIL_PARTS or key.startswith("n_") or key == "dim"):
                continue
            _flatten(value, f"{prefix}.{key}" if prefix else key, detail, out)
    elif isinstance(obj, bool):
        return
    elif isinstance(obj, (int, float)):
        out[prefix] = float(obj)
    elif obj is None and prefix:
        out[prefix] = math.nan  # NaN written as null


def metric_table(report: Mapping[str, Any], *, detail: bool = False) -> dict[str, float]:
    """Dotted metric name -> value for the compared sections of ``report``."""
    out: dict[str, float] = {}
    for section in SECTIONS:
        if report.get(section):
            _flatten(report[section], section, detail, out)
    return out


def compare_reports(
    a: Mapping[str, Any], b: Mapping[str, Any], *, detail: bool = False
) -> list[tuple[str, float | None, float | None, float | None]]:
    """Rows (metric, A, B, B - A); metrics in A's order, then those only B has."""
    ta, tb = metric_table(a, detail=detail), metric_table(b, detail=detail)
    rows = []
    for key in list(ta) + [k for k in tb if k not in ta]:
        va, vb = ta.get(key), tb.get(key)
        diff = vb - va if va is not None and vb is not None and math.isfinite(va) and math.isfinite(vb) else None
        rows.append((key, va, vb, diff))
    return rows


def _cell(v: float | None, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def _label(report: Mapping[str, Any], fallback: str) -> str:
    model = report.get("model")
    if isinstance(model, Mapping) and model.get("name"):
        return str(model["name"])
    return fallback


def format_comparison(
    a: Mapping[str, Any], b: Mapping[str, Any], *, detail: bool = False, markdown: bool = False
) -> str:
    """A text (or Markdown) table of :func:`compare_reports`, with a header naming both reports."""
    rows = compare_reports(a, b, detail=detail)
    name_a, name_b = str(a.get("_path", "A")), str(b.get("_path", "B"))
    header = [
        f"A: {name_a} ({_label(a, 'A')}, {a.get('dataset', '?')} {a.get('split', '')})".rstrip(),
        f"B: {name_b} ({_label(b, 'B')}, {b.get('dataset', '?')} {b.get('split', '')})".rstrip(),
        "",
    ]
    if not rows:
        return "\n".join(header + ["no metrics to compare"])
    cells = [(k, _cell(va), _cell(vb), _cell(d, signed=True)) for k, va, vb, d in rows]
    if markdown:
        lines = ["| metric | A | B | B − A |", "|---|---|---|---|"]
        lines += [f"| {k} | {va} | {vb} | {d} |" for k, va, vb, d in cells]
        return "\n".join(header + lines) + "\n"
    width = max(len("metric"), *(len(c[0]) for c in cells))
    lines = [f"{'metric':<{width}}  {'A':>10}  {'B':>10}  {'B - A':>10}", "-" * (width + 36)]
    lines += [f"{k:<{width}}  {va:>10}  {vb:>10}  {d:>10}" for k, va, vb, d in cells]
    return "\n".join(header + lines) + "\n"
