"""Write an evaluation: the report (JSON, Markdown, plots) and one CLIP_benchmark-style JSON per task."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .report import to_jsonable, write_report
from .request import SuiteOutput


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "data"


def write_suite(
    out_dir: str | Path,
    output: SuiteOutput,
    *,
    config: dict[str, Any] | None = None,
    timing: dict[str, Any] | None = None,
    metrics_log: str | Path | None = None,
    extra: dict[str, Any] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Write ``results/<task>_<dataset>.json`` and the report (plots unless ``plots`` is False); return the report.

    ``extra`` adds top-level report entries (a training run's data accounting); ``metrics_log``
    (a training run's ``metrics.jsonl``) adds the loss curve.
    """
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
    results = {**output.results, **(extra or {}), "result_files": [f"results/{f}" for f in files]}
    return write_report(
        out_dir,
        results,
        config=config,
        timing=timing,
        metrics_log=metrics_log,
        image_emb=output.image_emb,
        text_emb=output.text_emb,
        plots=plots,
        figures=output.figures,
    )
