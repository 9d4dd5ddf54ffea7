"""``contrastkit adapt wise-ft``: sweep α between a start and a fine-tuned run, choose α on validation, write
the chosen model as a run directory with a report (see :mod:`contrastkit.adapt.wise_ft` for the method).

OUT/ holds ``sweep.jsonl`` (one line per α and split, appended as each is measured: a killed sweep rerun
with the same arguments measures only what is missing), ``wise_ft.png`` (source against target accuracy
over α, test split, the chosen α marked), ``report.json`` / ``report.md``, ``command.txt`` and the chosen
θ(α) as a contrastkit run (``config.json`` + ``checkpoints/``) that ``contrastkit eval --checkpoint OUT``
and every other command read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..data.sources import open_source
from ..invocation import command_line
from ..models.checkpoint import latest_checkpoint, read_run_config, save_checkpoint
from ..models.load import load_run
from .result_lines import ResultLines
from .wise_ft import Point, above_chord, beats_both_ends, choose_alpha, interpolate, zero_shot_accuracy
from .wise_ft_report import plot_sweep, write_markdown


@dataclass
class SweepRequest:
    """What ``contrastkit adapt wise-ft`` was asked (also the key a resumed sweep must match)."""

    start: str  # run directory of the model fine-tuning started from
    finetuned: str  # run directory of the fine-tuned model
    source: str  # data spec of the start's distribution (default: the start run's data.source)
    target: str  # data spec of the fine-tuning distribution (default: the fine-tuned run's data.source)
    alphas: list[float]
    metric: str = "mean"  # zero-shot task whose accuracy chooses α ("mean": the mean over tasks)
    select: str = "mean"  # choose α by source, target or the mean of both (validation split)
    val_split: str = "val"
    test_split: str = "test"
    max_records: int = 1000


def check_alphas(alphas: Sequence[float]) -> list[float]:
    """Sorted, unique α in [0, 1]; the end points 0 and 1 are always measured (the curve needs them)."""
    bad = [a for a in alphas if not 0.0 <= a <= 1.0]
    if bad:
        raise ValueError(f"--alphas: every α must lie in [0, 1]; got {', '.join(map(str, bad))}")
    return sorted({0.0, 1.0, *(round(float(a), 6) for a in alphas)})


def run_sweep(request: SweepRequest, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """Measure every (α, split) not yet in ``out/sweep.jsonl``, choose α, write the model and the report."""
    out = Path(out)
    request.alphas = check_alphas(request.alphas)
    start_model, start_cfg = load_run(request.start)
    tuned_model, tuned_cfg = load_run(request.finetuned)
    start_state = {k: v.detach().clone() for k, v in start_model.state_dict().items()}
    tuned_state = {k: v.detach().clone() for k, v in tuned_model.state_dict().items()}
    interpolate(start_state, tuned_state, 0.0)  # fail now, not after the first evaluations, if they do not mix
    lines = ResultLines(out, "sweep.jsonl", asdict(request), free=("alphas",))
    points = [Point(**row) for row in lines.read()]
    done = {(p.alpha, p.split) for p in points}
    data_cfg = tuned_cfg.data
    todo = [(a, s) for s in (request.val_split, request.test_split) for a in request.alphas if (a, s) not in done]
    datasets: dict[tuple[str, str], Any] = {}
    bar = tqdm(todo, desc="wise-ft", disable=not progress, dynamic_ncols=True)
    for alpha, split in bar:
        bar.set_postfix(alpha=alpha, split=split)
        tuned_model.load_state_dict(interpolate(start_state, tuned_state, alpha))
        accuracy = {}
        for role, spec in (("source", request.source), ("target", request.target)):
            if (spec, split) not in datasets:
                datasets[spec, split] = open_source(spec, split, data_cfg)
            accuracy[role] = zero_shot_accuracy(tuned_model, datasets[spec, split], max_records=request.max_records)
        point = Point(alpha, split, accuracy["source"], accuracy["target"])
        _check_metric(point, request.metric)
        lines.append(asdict(point))
        points.append(point)
    chosen = choose_alpha(points, request.metric, request.select, request.val_split)
    tuned_model.load_state_dict(interpolate(start_state, tuned_state, chosen))
    (out / "config.json").write_text(json.dumps({**tuned_cfg.to_dict(), "name": f"{tuned_cfg.name}-wise-ft"}, indent=1))
    save_checkpoint(out, 0, tuned_model, keep=1)  # one model, no training steps of its own
    (out / "command.txt").write_text(command_line() + "\n")
    points = [p for p in points if p.alpha in request.alphas]
    report = {
        "method": "wise_ft",
        "request": asdict(request),
        "chosen_alpha": chosen,
        "beats_both_ends_at": beats_both_ends(points, request.metric, request.test_split),
        "above_chord_at": above_chord(points, request.metric, request.test_split),
        "points": [asdict(p) for p in sorted(points, key=lambda p: (p.split, p.alpha))],
        "start_data": start_cfg.data.source,
        "checkpoint": str(latest_checkpoint(out)),
    }
    plot_sweep(points, request.metric, request.test_split, chosen, out / "wise_ft.png")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(write_markdown(report))
    return report


def _check_metric(point: Point, metric: str) -> None:
    for role, accuracy in (("source", point.source), ("target", point.target)):
        if metric not in accuracy:
            raise ValueError(
                f"--metric {metric!r}: the {role} data has zero-shot tasks {', '.join(accuracy)}; choose one of them"
            )


def default_request(start: str, finetuned: str, **options: Any) -> SweepRequest:
    """A request whose source / target default to the data the two runs were trained on."""
    source = options.pop("source", None) or load_run_config_source(start)
    target = options.pop("target", None) or load_run_config_source(finetuned)
    return SweepRequest(start=start, finetuned=finetuned, source=source, target=target, **options)


def load_run_config_source(run_dir: str) -> str:
    return str(read_run_config(Path(run_dir)).get("data", {}).get("source", "synthetic:shapes"))
