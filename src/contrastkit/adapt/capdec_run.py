"""``contrastkit adapt text-caption``: CapDec's noise sweep (:mod:`~contrastkit.adapt.capdec`) over seeds.

Training text: every caption of the train split's first ``max_records`` records (no image of the train split
is read). Mean shift: estimated on the val split's (image, first caption) pairs. Test: the test split's
first ``max_records`` images, captioned greedily from their image embeddings and scored against their own
captions with BLEU-4 and CIDEr-D (pycocoevalcap). For each w and seed a decoder without and one with the
mean shift are trained and scored.

OUT/ holds ``sweep.jsonl`` (one line per w, shift and seed; resumable), ``report.json`` / ``report.md``
(mean ± sd over seeds, example captions), ``text_caption.png`` (CIDEr against w), ``decoders/w<w>-<plain|shift>
-s<seed>.safetensors`` (each trained decoder) and ``vocab.json`` (the decoders' words, id i = line i).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..config import apply_overrides, config_from_dict
from ..data.sources import open_source
from ..evaluate.captioning import caption_scores
from ..evaluate.verdicts import summarize
from ..invocation import command_line
from ..models.embedder import dual_encoder_embedder
from ..models.load import load_run
from ..models.tokenizer import HashedWordTokenizer
from .capdec import CaptionVocab, DecoderSettings, train_captioner
from .result_lines import ResultLines
from .text_only_run import paired_shift

EXAMPLES = 5


@dataclass
class CaptionRequest:
    run: str
    data: str
    noise: list[float]
    seeds: list[int]
    max_records: int = 1000
    decoder: DecoderSettings = field(default_factory=DecoderSettings)


@dataclass
class CaptionData:
    vocab: CaptionVocab
    text: torch.Tensor  # N x D caption embeddings (train)
    tokens: torch.Tensor  # N x L their word ids
    shift: torch.Tensor  # D, μ_img − μ_txt on val pairs
    images: torch.Tensor  # M x D test image embeddings
    references: list[list[str]]  # the test images' captions, as space-separated words


def _words(caption: str) -> str:
    return " ".join(HashedWordTokenizer.words(caption))


def prepare(request: CaptionRequest, data_overrides: Sequence[str]) -> CaptionData:
    model, cfg = load_run(request.run)
    data_cfg = config_from_dict(apply_overrides(cfg.to_dict(), [f"data.source={request.data}", *data_overrides])).data
    splits = {s: open_source(request.data, s, data_cfg) for s in ("train", "val", "test")}
    embedder = dual_encoder_embedder(model)
    train = [splits["train"][i] for i in range(min(len(splits["train"]), request.max_records))]
    captions = [c for record in train for c in record.captions]
    if not captions:
        raise ValueError(f"--data {request.data}: the train split has no caption to learn from")
    vocab = CaptionVocab(captions)
    length = min(48, 2 + max(len(HashedWordTokenizer.words(c)) for c in captions))
    test = [splits["test"][i] for i in range(min(len(splits["test"]), request.max_records))]
    return CaptionData(
        vocab,
        embedder.embed_texts(captions).float(),
        vocab.encode(captions, length),
        paired_shift(splits["val"], embedder, request.max_records),
        embedder.embed_images([r.load_image() for r in test]).float(),
        [[_words(c) for c in r.captions] for r in test],
    )


def measure(
    data: CaptionData, w: float, shifted: bool, seed: int, settings: DecoderSettings
) -> tuple[dict[str, Any], torch.nn.Module]:
    model = train_captioner(
        data.text, data.tokens, len(data.vocab), w=w, shift=data.shift if shifted else None, settings=settings,
        seed=seed,
    )  # fmt: skip
    captions = [data.vocab.decode(ids.tolist()) for ids in model.generate(data.images)]
    scores = caption_scores(data.references, [c or "<empty>" for c in captions])
    return {"w": w, "shift": shifted, "seed": seed, **scores, "examples": captions[:EXAMPLES]}, model


def run_text_caption(
    request: CaptionRequest, out: Path, *, data_overrides: Sequence[str] = (), progress: bool = True
) -> dict[str, Any]:
    """Measure what ``out/sweep.jsonl`` lacks, then write the report; returns the report."""
    if not request.noise or min(request.noise) < 0:
        raise ValueError(f"--noise: give noise levels w >= 0, got {request.noise}")
    spec = {**asdict(request), "data_overrides": list(data_overrides)}
    lines = ResultLines(out, "sweep.jsonl", spec, free=("noise", "seeds"))
    wanted = [(w, shifted, s) for w in request.noise for shifted in (False, True) for s in request.seeds]
    rows = [r for r in lines.read() if (r["w"], r["shift"], r["seed"]) in set(wanted)]
    todo = [key for key in wanted if key not in {(r["w"], r["shift"], r["seed"]) for r in rows}]
    if todo:
        data = prepare(request, data_overrides)
        (out / "decoders").mkdir(exist_ok=True)
        (out / "vocab.json").write_text(json.dumps(data.vocab.words))
        for w, shifted, seed in tqdm(todo, desc="text-only captioning", disable=not progress):
            row, decoder = measure(data, w, shifted, seed, request.decoder)
            name = f"w{w:g}-{'shift' if shifted else 'plain'}-s{seed}.safetensors"
            save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, out / "decoders" / name)
            lines.append(row)
            rows.append(row)
    report: dict[str, Any] = {
        "method": "capdec_text_only_captioning",
        "request": asdict(request),
        "summary": summary(rows),
        "rows": rows,
        "command": command_line(),
    }
    plot(report["summary"], out / "text_caption.png")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    return report


def summary(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample sd of BLEU-4 and CIDEr-D over seeds, per w and arm."""
    out = []
    for shifted in (False, True):
        for w in sorted({r["w"] for r in rows}):
            mine = [r for r in rows if r["w"] == w and r["shift"] == shifted]
            if mine:
                entry: dict[str, Any] = {"w": w, "shift": shifted, "n": len(mine)}
                for key in ("bleu4", "cider"):
                    stats = summarize([r[key] for r in mine])
                    entry[key] = {"mean": stats.mean, "sd": stats.sd}
                out.append(entry)
    return out


def summary_table(report: Mapping[str, Any]) -> list[str]:
    """Markdown lines: CIDEr-D and BLEU-4 per w (columns) and arm (rows), mean ± sd over seeds."""
    ws = sorted({e["w"] for e in report["summary"]})
    lines = ["| arm | score | " + " | ".join(f"w = {w:g}" for w in ws) + " |", "|---|---|" + "---|" * len(ws)]
    for shifted, arm in ((False, "noise only"), (True, "mean shift + noise")):
        for key, name in (("cider", "CIDEr-D"), ("bleu4", "BLEU-4")):
            cells = {
                e["w"]: f"{e[key]['mean']:.3f} ± {e[key]['sd']:.3f}" for e in report["summary"] if e["shift"] == shifted
            }
            if cells:
                lines.append(f"| {arm} | {name} | " + " | ".join(cells.get(w, "-") for w in ws) + " |")
    return lines


def plot(entries: Sequence[Mapping[str, Any]], path: Path) -> None:
    fig = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for shifted, label in ((False, "noise only"), (True, "mean shift + noise")):
        points = [e for e in entries if e["shift"] == shifted]
        if points:
            ax.errorbar(
                [e["w"] for e in points], [e["cider"]["mean"] for e in points], yerr=[e["cider"]["sd"] for e in points],
                marker="o", capsize=3, label=label,
            )  # fmt: skip
    ax.set_xlabel("noise w (std of the Gaussian added to each text embedding)")
    ax.set_ylabel("CIDEr-D of captions from image embeddings")
    ax.set_title("Text-only captioning (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def markdown(report: Mapping[str, Any]) -> str:
    request = report["request"]
    best = max(report["summary"], key=lambda e: e["cider"]["mean"])
    examples = next(r["examples"] for r in report["rows"] if r["w"] == best["w"] and r["shift"] == best["shift"])
    lines = [
        "# Text-only captioning (CapDec)",
        "",
        f"run `{request['run']}`, data `{request['data']}`: a decoder trained on caption embeddings only, captioning "
        f"the test split's images from their embeddings; mean ± sd over seeds {', '.join(map(str, request['seeds']))}.",
        "",
        *summary_table(report),
        "",
        f"Best: w = {best['w']:g} ({'mean shift + noise' if best['shift'] else 'noise only'}), CIDEr-D "
        f"{best['cider']['mean']:.3f}. Its first captions: " + "; ".join(f"“{c}”" for c in examples),
        "",
        "![CIDEr against w](text_caption.png)",
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    return "\n".join(lines)
