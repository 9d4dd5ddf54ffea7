"""``contrastkit adapt text-only``: the noise sweep of :mod:`~contrastkit.adapt.text_only` over seeds, with a report.

Texts: every caption of the task's records in the train split, labelled with the record's class (no
image of the train split is read). Mean shift: estimated on the val split's (image, first caption) pairs.
Test: the task's records of the test split, images only, against the zero-shot head on the same images.
For each noise level w and seed, a head trained without and one with the mean shift are scored.

OUT/ holds ``sweep.jsonl`` (one line per w, shift and seed; resumable), ``report.json`` / ``report.md``
(mean ± sd over seeds), ``text_only.png`` (image accuracy against w) and ``heads/w<w>-<plain|shift>-s<seed>
.safetensors``, each trained head (weight, bias: logits = normalize(image embedding) Wᵀ + b).
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

from ..config import apply_overrides, config_from_dict
from ..data.records import Dataset
from ..data.sources import open_source
from ..evaluate.verdicts import summarize
from ..invocation import command_line
from ..models.embedder import TorchEmbedder, dual_encoder_embedder
from ..models.load import load_run
from .few_shot import embed_split, find_task, head_weights
from .result_lines import ResultLines
from .text_only import LinearHead, modality_shift, train_text_head


@dataclass
class TextOnlyRequest:
    run: str
    data: str
    task: str
    noise: list[float]
    seeds: list[int]
    max_records: int = 2000
    steps: int = 300


@dataclass
class TextData:
    """Text embeddings with their class labels (train), the mean shift (val pairs), test images with labels."""

    text: torch.Tensor
    text_labels: torch.Tensor
    shift: torch.Tensor
    images: torch.Tensor
    image_labels: torch.Tensor
    zero_shot: float


def task_captions(dataset: Dataset, task_name: str, max_records: int) -> tuple[list[str], list[int]]:
    """Every caption of (the first ``max_records``) records of the task, each with its record's class."""
    task = find_task(dataset, task_name)
    texts, labels = [], []
    for index, label in list(zip(task.indices, task.labels))[:max_records]:
        for caption in dataset[index].captions:
            texts.append(caption)
            labels.append(label)
    return texts, labels


def paired_shift(dataset: Dataset, embedder: TorchEmbedder, max_records: int) -> torch.Tensor:
    """μ_img - μ_txt on the first ``max_records`` (image, first caption) pairs of ``dataset``."""
    records = [dataset[i] for i in range(min(len(dataset), max_records))]
    images = embedder.embed_images([r.load_image() for r in records]).float()
    texts = embedder.embed_texts([r.captions[0] for r in records]).float()
    return modality_shift(images, texts)


def prepare(request: TextOnlyRequest, splits: Mapping[str, Dataset], embedder: TorchEmbedder) -> TextData:
    texts, labels = task_captions(splits["train"], request.task, request.max_records)
    if not texts:
        raise ValueError(f"--task {request.task!r}: the train split has no captioned record of the task")
    test = embed_split(splits["test"], request.task, embedder, request.max_records)
    weights = head_weights(embedder, find_task(splits["test"], request.task))
    zero = float(((test.features @ weights.T).argmax(1) == test.labels).float().mean())
    return TextData(
        embedder.embed_texts(texts).float(),
        torch.tensor(labels),
        paired_shift(splits["val"], embedder, request.max_records),
        test.features,
        test.labels,
        zero,
    )


def measure(
    data: TextData, n_classes: int, w: float, shifted: bool, seed: int, steps: int
) -> tuple[dict[str, Any], LinearHead]:
    head = train_text_head(
        data.text, data.text_labels, n_classes, w=w, shift=data.shift if shifted else None, steps=steps, seed=seed
    )
    row = {
        "w": w,
        "shift": shifted,
        "seed": seed,
        "acc1": head.accuracy(data.images, data.image_labels),
        "text_acc1": head.accuracy(data.text, data.text_labels),
        "zero_shot": data.zero_shot,
    }
    return row, head


def run_text_only(
    request: TextOnlyRequest, out: Path, *, data_overrides: Sequence[str] = (), progress: bool = True
) -> dict[str, Any]:
    """Measure what ``out/sweep.jsonl`` lacks, then write the report; returns the report."""
    if not request.noise or min(request.noise) < 0:
        raise ValueError(f"--noise: give noise levels w >= 0, got {request.noise}")
    lines = ResultLines(
        out, "sweep.jsonl", {**asdict(request), "data_overrides": list(data_overrides)}, free=("noise", "seeds")
    )
    rows = lines.read()
    done = {(r["w"], r["shift"], r["seed"]) for r in rows}
    todo = [(w, s, seed) for w in request.noise for s in (False, True) for seed in request.seeds]
    todo = [t for t in todo if t not in done]
    if todo:
        model, cfg = load_run(request.run)
        data_cfg = config_from_dict(apply_overrides(cfg.to_dict(), [f"data.source={request.data}", *data_overrides]))
        splits = {s: open_source(request.data, s, data_cfg.data) for s in ("train", "val", "test")}
        embedder = dual_encoder_embedder(model)
        data = prepare(request, splits, embedder)
        n_classes = len(find_task(splits["test"], request.task).classnames)
        (out / "heads").mkdir(exist_ok=True)
        for w, shifted, seed in tqdm(todo, desc="text-only", disable=not progress):
            row, head = measure(data, n_classes, w, shifted, seed, request.steps)
            name = f"w{w:g}-{'shift' if shifted else 'plain'}-s{seed}.safetensors"
            save_file({"weight": head.weight.contiguous(), "bias": head.bias.contiguous()}, out / "heads" / name)
            lines.append(row)
            rows.append(row)
    summary = summarise(rows)
    report = {
        "method": "text_only",
        "request": asdict(request),
        "summary": summary,
        "best": best_noise(summary),
        "rows": rows,
        "command": command_line(),
    }
    plot_sweep(summary, rows[0]["zero_shot"] if rows else None, request.task, out / "text_only.png")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    return report


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample sd of the image accuracy over seeds, per (shift, w)."""
    out = []
    for shifted in (False, True):
        for w in sorted({r["w"] for r in rows}):
            values = [r["acc1"] for r in rows if r["w"] == w and r["shift"] == shifted]
            if values:
                stats = summarize(values)
                out.append({"shift": shifted, "w": w, "mean": stats.mean, "sd": stats.sd, "n": stats.n})
    return out


def best_noise(summary: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per setting (with / without shift) the w of the highest mean accuracy, and its gain over w = 0."""
    best: dict[str, Any] = {}
    for shifted in (False, True):
        points = [s for s in summary if s["shift"] == shifted]
        if not points:
            continue
        top = max(points, key=lambda s: s["mean"])
        zero = next((s["mean"] for s in points if s["w"] == 0), None)
        key = "mean_shift" if shifted else "noise_only"
        best[key] = {"w": top["w"], "mean": top["mean"], "gain_over_w0": None if zero is None else top["mean"] - zero}
    return best


def plot_sweep(summary: Sequence[Mapping[str, Any]], zero_shot: float | None, task: str, path: Path) -> None:
    """Image accuracy against the noise w, mean ± sd over seeds, without and with the mean shift."""
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for shifted, label in ((False, "noise only"), (True, "mean shift + noise")):
        points = [s for s in summary if s["shift"] == shifted]
        ax.errorbar(
            [s["w"] for s in points],
            [100 * s["mean"] for s in points],
            yerr=[100 * s["sd"] for s in points],
            marker="o",
            capsize=3,
            label=label,
        )
    if zero_shot is not None:
        ax.axhline(100 * zero_shot, color="grey", linestyle="--", label="zero-shot head (images)")
    ax.set_xlabel("noise w (std of the Gaussian added to the text embedding)")
    ax.set_ylabel(f"accuracy on images, {task} (%)")
    ax.set_title("Trained on text only, tested on images (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def summary_table(report: Mapping[str, Any]) -> list[str]:
    """Image accuracy (%) per setting and w, mean ± sd over seeds, as Markdown table lines."""
    ws = sorted({s["w"] for s in report["summary"]})
    lines = ["| setting | " + " | ".join(f"w = {w:g}" for w in ws) + " |", "|---|" + "---|" * len(ws)]
    for shifted, label in ((False, "noise only"), (True, "mean shift + noise")):
        cells = {
            s["w"]: f"{100 * s['mean']:.1f} ± {100 * s['sd']:.1f}" for s in report["summary"] if s["shift"] == shifted
        }
        lines.append(f"| {label} | " + " | ".join(cells.get(w, "-") for w in ws) + " |")
    return lines


def markdown(report: Mapping[str, Any]) -> str:
    request = report["request"]
    zero = report["rows"][0]["zero_shot"] if report["rows"] else float("nan")
    lines = [
        "# Text-only transfer (CLOSE / CapDec)",
        "",
        f"run `{request['run']}`, data `{request['data']}`, task `{request['task']}`: a linear classifier trained on "
        f"the train split's caption embeddings only, scored on the test split's images; mean ± sd over seeds "
        f"{', '.join(map(str, request['seeds']))}. Zero-shot head on the same images: {100 * zero:.1f}%.",
        "",
        *summary_table(report),
    ]
    for key, best in report["best"].items():
        gain = "" if best["gain_over_w0"] is None else f", {100 * best['gain_over_w0']:+.1f} points over w = 0"
        lines.append(f"\nBest {key.replace('_', ' ')}: w = {best['w']:g}, {100 * best['mean']:.1f}%{gain}.")
    lines += ["", "![accuracy against noise](text_only.png)", "", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)
