"""The WiSE-FT report: the source-against-target curve over α, and the markdown table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .wise_ft import Point


def plot_sweep(points: Sequence[Point], metric: str, split: str, chosen: float, path: Path) -> None:
    """Source accuracy (x) against target accuracy (y) for every α of ``split``, each point labelled with its
    α, the straight line between the two end points dashed, the chosen α circled."""
    curve = sorted((p for p in points if p.split == split), key=lambda p: p.alpha)
    xs = [100 * p.source[metric] for p in curve]
    ys = [100 * p.target[metric] for p in curve]
    fig = Figure(figsize=(6, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(xs, ys, marker="o", color="#1f77b4", label="θ(α) = (1−α) θ_start + α θ_finetuned")
    ax.plot([xs[0], xs[-1]], [ys[0], ys[-1]], linestyle="--", color="grey", label="linear between end points")
    for p, x, y in zip(curve, xs, ys):
        ax.annotate(f"α={p.alpha:g}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize="small")
        if p.alpha == chosen:
            ax.scatter([x], [y], s=220, facecolors="none", edgecolors="#d62728", linewidths=2, label="chosen α (val)")
    name = "mean zero-shot accuracy" if metric == "mean" else f"zero-shot {metric} accuracy"
    ax.set_xlabel(f"source: {name} (%)")
    ax.set_ylabel(f"target: {name} (%)")
    ax.set_title(f"WiSE-FT, {split} split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def write_markdown(report: Mapping[str, Any]) -> str:
    """report.md: the request, the sweep table per split and the chosen α."""
    request = report["request"]
    metric = request["metric"]
    lines = [
        "# WiSE-FT sweep",
        "",
        f"start `{request['start']}` (source data `{request['source']}`), fine-tuned `{request['finetuned']}` "
        f"(target data `{request['target']}`); zero-shot accuracy ({metric}), at most {request['max_records']} "
        "records per split.",
        "",
        f"**Chosen α = {report['chosen_alpha']:g}** (highest {request['select']} of source and target on the "
        f"{request['val_split']} split); written to `{report['checkpoint']}`.",
        "",
    ]
    bend = report["beats_both_ends_at"]
    lines.append(
        f"α = {', '.join(f'{a:g}' for a in bend)} beat the fine-tuned model on the source and the start on the "
        "target (each end point on its weak side)."
        if bend
        else "No α inside (0, 1) beats both the fine-tuned model on the source and the start on the target."
    )
    chord = report["above_chord_at"]
    lines.append(
        f"Above the straight line between the end points (a better trade-off than the end points offer): "
        f"α = {', '.join(f'{a:g}' for a in chord)}."
        if chord
        else "No α lies above the straight line between the end points: here, weight-space interpolation trades "
        "source for target accuracy no better than the end points do (the paper's curves lie above that line)."
    )
    for split in (request["val_split"], request["test_split"]):
        lines += ["", f"## {split}", "", "| α | source | target |", "|---|---|---|"]
        for p in report["points"]:
            if p["split"] == split:
                lines.append(
                    f"| {p['alpha']:g} | {100 * p['source'][metric]:.1f}% | {100 * p['target'][metric]:.1f}% |"
                )
    lines += ["", "![WiSE-FT curve](wise_ft.png)", ""]
    return "\n".join(lines)
