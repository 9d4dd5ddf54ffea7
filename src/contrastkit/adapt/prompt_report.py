"""The report of ``contrastkit adapt prompt``: tables (mean ± sd over seeds), paired comparisons and a plot.

Base-to-new: per k a table of base accuracy, new accuracy and H per method, then the comparisons the
literature makes, each a paired difference over seeds with its 95% interval
(:func:`~contrastkit.evaluate.verdicts.paired_difference`): CoOp against zero-shot on base and on new
classes, CoCoOp / GOPro / TOMM-style against CoOp on H. ``all``: accuracy per method and k.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..evaluate.verdicts import paired_difference, summarize

ORDER = ("zero_shot", "coop", "cocoop", "tomm", "gopro")
COMPARISONS = (  # (method, control, score): what the CoOp literature reports
    ("coop", "zero_shot", "base"),
    ("coop", "zero_shot", "new"),
    ("cocoop", "coop", "harmonic"),
    ("gopro", "coop", "harmonic"),
    ("tomm", "coop", "harmonic"),
    ("cocoop", "coop", "new"),
)


def scores_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return ["base", "new", "harmonic"] if rows and "base" in rows[0] else ["all"]


def summary(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample sd over seeds per method, k and score."""
    out = []
    for method in ORDER:
        for k in sorted({r["k"] for r in rows}):
            mine = [r for r in rows if r["method"] == method and r["k"] == k]
            if mine:
                entry: dict[str, Any] = {"method": method, "k": k, "n": len(mine)}
                for score in scores_of(rows):
                    stats = summarize([r[score] for r in mine])
                    entry[score] = {"mean": stats.mean, "sd": stats.sd}
                out.append(entry)
    return out


def comparisons(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Paired differences (over seeds, per k) of the literature's comparisons that the rows allow."""
    if "base" not in scores_of(rows):
        return []
    found = []
    for method, control, score in COMPARISONS:
        for k in sorted({r["k"] for r in rows}):
            a = {r["seed"]: r[score] for r in rows if r["method"] == method and r["k"] == k}
            b = {r["seed"]: r[score] for r in rows if r["method"] == control and r["k"] == k}
            seeds = sorted(set(a) & set(b))
            if len(seeds) >= 2:
                diff = paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
                found.append({"method": method, "control": control, "score": score, "k": k, **asdict(diff)})
    return found


def summary_table(report: Mapping[str, Any]) -> list[str]:
    """Markdown lines: one row per method and k, one column per score (%, mean ± sd)."""
    scores = [s for s in ("base", "new", "harmonic", "all") if report["summary"] and s in report["summary"][0]]
    head = {"base": "base", "new": "new", "harmonic": "H", "all": "accuracy"}
    lines = ["| method | k | " + " | ".join(head[s] for s in scores) + " |", "|---|---|" + "---|" * len(scores)]
    for entry in report["summary"]:
        cells = [f"{100 * entry[s]['mean']:.1f} ± {100 * entry[s]['sd']:.1f}" for s in scores]
        lines.append(f"| {entry['method'].replace('_', ' ')} | {entry['k']} | " + " | ".join(cells) + " |")
    return lines


def comparison_lines(report: Mapping[str, Any]) -> list[str]:
    lines = []
    for c in report["comparisons"]:
        sign = "above" if c["low"] > 0 else "below" if c["high"] < 0 else "within noise of"
        lines.append(
            f"- k = {c['k']}: {c['method']} {c['score']} {100 * c['mean']:+.1f} points vs {c['control']} "
            f"[95% CI {100 * c['low']:+.1f}, {100 * c['high']:+.1f}]: {sign} {c['control']}"
        )
    return lines


def write_report(
    request: Any,
    rows: Sequence[Mapping[str, Any]],
    out: Path,
    command: str,
    selection: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    report = {
        "method": "prompt_learning",
        "request": asdict(request),
        "summary": summary(rows),
        "comparisons": comparisons(rows),
        "rows": list(rows),
        "command": command,
        "selection": selection,
    }
    plot(report, out / "prompts.png")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    return report


def plot(report: Mapping[str, Any], path: Path) -> None:
    """Per score, accuracy against shots per class (mean ± sd over seeds), one line per method."""
    scores = scores_of(report["rows"])
    fig = Figure(figsize=(4.2 * len(scores), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, score in zip(fig.subplots(1, len(scores), squeeze=False)[0], scores):
        for method in ORDER:
            points = [e for e in report["summary"] if e["method"] == method]
            if points:
                ax.errorbar(
                    [e["k"] for e in points],
                    [100 * e[score]["mean"] for e in points],
                    yerr=[100 * e[score]["sd"] for e in points],
                    marker="o",
                    capsize=3,
                    label=method.replace("_", " "),
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("shots per class")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title({"harmonic": "harmonic mean H"}.get(score, f"{score} classes" if score != "all" else "all"))
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize="small")
    fig.savefig(path, dpi=110)


def selection_lines(report: Mapping[str, Any]) -> list[str]:
    """One sentence naming the lr and steps each method was given, and the split that chose them."""
    picked = report.get("selection")
    if not picked:
        return []
    choices = "; ".join(f"{c['method']} (k {c['k']}) lr {c['lr']:g}, {c['steps']} steps" for c in picked["chosen"])
    return [
        f"Learning rate and steps per method chosen by {len(picked['trials'])} trials on the {picked['split']} split "
        f"(seed {picked['seed']}; the scored split took no part): {choices}."
    ]


def markdown(report: Mapping[str, Any]) -> str:
    request = report["request"]
    settings = request["settings"]
    schedule = (
        "Adam at the lr and steps chosen per method (below)"
        if report.get("selection")
        else f"{settings['steps']} Adam steps at lr {settings['lr']:g}"
    )
    lines = [
        "# Prompt learning",
        "",
        f"run `{request['run']}`, data `{request['data']}`, task `{request['task']}`, protocol "
        f"`{request['protocol']}`; M = {settings['n_ctx']} context vectors initialised from "
        f"{settings['ctx_init'] or 'N(0, 0.02²)'!r}, class token at the {settings['position']}, {schedule}; "
        f"accuracy on the {request['eval_split']} split (%), mean ± sd over seeds "
        f"{', '.join(map(str, request['seeds']))}.",
        "",
        *summary_table(report),
    ]
    lines += ["", *selection_lines(report)] if report.get("selection") else []
    if report["comparisons"]:
        lines += ["", "Paired differences over seeds (95% t-interval):", "", *comparison_lines(report)]
    lines += ["", "![prompt learning](prompts.png)", "", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)
