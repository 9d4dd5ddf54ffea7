"""``contrastkit adapt few-shot``: the ladder of :mod:`~contrastkit.adapt.few_shot` over k and seeds, with a report.

OUT/ holds ``ladder.jsonl`` (one line per method, k and seed; resumable), ``report.json`` / ``report.md``
(mean ± sd over seeds per method and k), ``few_shot.png`` (accuracy against shots per class) and
``weights/<method>-k<k>-s<seed>.safetensors``: what each method adapted — the probe's head (W, b), Tip-Adapter's
cache (keys, key_labels; α, β are in the row), the heads of LP-FT and FT and LoRA's head and adapters (the fully
fine-tuned image towers of LP-FT and FT are not kept: a whole tower per k and seed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..config import LoraConfig, apply_overrides, config_from_dict
from ..data.sources import open_source
from ..invocation import command_line
from ..models.embedder import dual_encoder_embedder
from ..models.load import load_run
from .few_shot import (
    METHODS,
    Row,
    check_shots,
    embed_split,
    find_task,
    finetune_rows,
    head_weights,
    ladder_rows,
    summarise,
)
from .lp_ft import FineTuneSettings
from .result_lines import ResultLines


@dataclass
class LadderRequest:
    run: str
    data: str
    task: str
    shots: list[int]
    seeds: list[int]
    max_records: int = 2000
    finetune_steps: int = 0  # > 0: also LP-FT and FT (the image tower fine-tuned on the shots)
    finetune_lr: float = 1e-4
    lora_rank: int = 8  # > 0 (with finetune_steps): also LoRA on the image side, same steps
    lora_lr: float = 1e-3


def run_ladder(request: LadderRequest, out: Path, *, data_overrides: Sequence[str] = (), progress: bool = True):
    """Measure what ``out/ladder.jsonl`` lacks, then write the report; returns the report."""
    if not request.shots or min(request.shots) < 1:
        raise ValueError(f"--shots: give positive numbers of shots per class, got {request.shots}")
    if request.lora_rank < 0 or request.lora_lr <= 0:
        raise ValueError(f"--lora-rank must be >= 0 and --lora-lr > 0, got {request.lora_rank} and {request.lora_lr}")
    lines = ResultLines(out, "ladder.jsonl", {**asdict(request), "data_overrides": list(data_overrides)})
    rows = [Row(**row) for row in lines.read()]
    done = {(r.k, r.seed) for r in rows}
    todo = [(k, s) for k in request.shots for s in request.seeds if (k, s) not in done]
    model, cfg = load_run(request.run)
    settings = [f"data.source={request.data}", *data_overrides]
    data_cfg = config_from_dict(apply_overrides(cfg.to_dict(), settings)).data
    if todo:
        (out / "weights").mkdir(parents=True, exist_ok=True)
        embedder = dual_encoder_embedder(model)
        splits = {s: open_source(request.data, s, data_cfg) for s in ("train", "val", "test")}
        task = find_task(splits["test"], request.task)
        train, val, test = (embed_split(splits[s], request.task, embedder, request.max_records) for s in splits)
        check_shots(train.labels, task.classnames, request.shots)
        weights = head_weights(embedder, task)
        scale = float(model.logit_scale.detach())
        tuning = FineTuneSettings(steps=request.finetune_steps, lr=request.finetune_lr)
        lora = LoraConfig(rank=request.lora_rank, alpha=2 * request.lora_rank) if request.lora_rank > 0 else None
        test_pixels = torch.stack([embedder.preprocess(im) for im in test.images]) if tuning.steps else None
        for k, seed in tqdm(todo, desc="few-shot", disable=not progress):
            found = ladder_rows(train, val, test, weights, scale, k, seed)
            if test_pixels is not None:
                chosen_c = next(r.chosen["C"] for r in found if r.method == "linear_probe")
                found += finetune_rows(
                    model, embedder, train, test_pixels, test.labels, weights, chosen_c, tuning, k, seed, lora,
                    request.lora_lr,
                )  # fmt: skip
            for row in found:
                if row.weights:
                    kept = {name: t.contiguous() for name, t in row.weights.items()}
                    save_file(kept, out / "weights" / f"{row.method}-k{k}-s{seed}.safetensors")
                lines.append(row.line())
                rows.append(row)
    summary = summarise(rows)
    report = {
        "method": "few_shot_ladder",
        "request": asdict(request),
        "summary": summary,
        "rows": [r.line() for r in rows],
        "command": command_line(),
    }
    plot_ladder(summary, request.task, out / "few_shot.png")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    return report


def plot_ladder(summary: Sequence[Mapping[str, Any]], task: str, path: Path) -> None:
    """Test accuracy against shots per class, mean ± sd over seeds, one line per method."""
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for method in METHODS:
        points = [s for s in summary if s["method"] == method]
        if not points:
            continue
        ks = [s["k"] for s in points]
        means = [100 * s["mean"] for s in points]
        sds = [100 * s["sd"] for s in points]
        ax.errorbar(ks, means, yerr=sds, marker="o", capsize=3, label=method.replace("_", " "))
    ax.set_xscale("log", base=2)
    ks = sorted({s["k"] for s in summary})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("shots per class")
    ax.set_ylabel(f"test accuracy, {task} (%)")
    ax.set_title("Few-shot ladder (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def summary_table(report: Mapping[str, Any]) -> list[str]:
    """Test accuracy (%) per method and k, mean ± sd over seeds, as Markdown table lines."""
    ks = sorted({s["k"] for s in report["summary"]})
    lines = ["| method | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for method in METHODS:
        cells = {
            s["k"]: f"{100 * s['mean']:.1f} ± {100 * s['sd']:.1f}" for s in report["summary"] if s["method"] == method
        }
        if cells:
            lines.append(f"| {method.replace('_', ' ')} | " + " | ".join(cells.get(k, "-") for k in ks) + " |")
    return lines


def markdown(report: Mapping[str, Any]) -> str:
    request = report["request"]
    lines = [
        "# Few-shot ladder",
        "",
        f"run `{request['run']}`, data `{request['data']}`, task `{request['task']}`; test accuracy, mean ± sd over "
        f"seeds {', '.join(map(str, request['seeds']))} (shots drawn from the train split, choices made on val).",
        "",
        *summary_table(report),
    ]
    lines += ["", "![few-shot ladder](few_shot.png)", "", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)
