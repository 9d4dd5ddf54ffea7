"""``contrastkit adapt residual``: the residual direction between two image sets, what names it, how it ranks.

The direction is fitted on the train splits of the two sources (``--from`` A, ``--to`` B) and tested on
their test splits: the ROC AUC of cos(e, v_res) for telling B from A on held-out images. The vocabulary
words and the captions of both sets whose text embeddings are closest to v_res are listed. With
``guide_steps`` > 0 a small image-to-image network (:mod:`~contrastkit.adapt.residual_guide`) is trained on A's
train images with the guidance loss and applied to A's test images; the report gives their scores along
v_res before and after, against B's, and a picture of before / after pairs.

OUT/ holds ``direction.safetensors`` (v_res and thr), ``report.json`` / ``report.md``, ``residual_scores.png``
and, with the guided network, ``guide.safetensors`` and ``residual_examples.png``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor

from ..config import apply_overrides, config_from_dict
from ..data.records import Dataset
from ..data.sources import open_source
from ..invocation import command_line
from ..models.embedder import TorchEmbedder, dual_encoder_embedder
from ..models.load import load_run
from .residual import Direction, aligned_texts, residual_direction, separation_auc
from .residual_guide import GuideSettings, train_guided


@dataclass
class ResidualRequest:
    run: str
    source_from: str
    source_to: str
    max_records: int = 500
    guide: GuideSettings = field(default_factory=GuideSettings)


def _images(dataset: Dataset, n: int) -> list[Image.Image]:
    return [dataset[i].load_image() for i in range(min(n, len(dataset)))]


def _texts(datasets: Sequence[Dataset], n: int) -> tuple[list[str], list[str]]:
    """Distinct words (3+ letters) and distinct captions of the first ``n`` records of each dataset."""
    captions = list(dict.fromkeys(c for d in datasets for i in range(min(n, len(d))) for c in d[i].captions))
    words = sorted({w for c in captions for w in re.findall(r"[a-z]{3,}", c.lower())})
    return words, captions


def _pixel_map(images: Sequence[Image.Image], pixels: Tensor) -> tuple[Tensor, Tensor] | None:
    """Per-channel (scale, offset) with pixels ≈ raw * scale + offset, when the transform keeps the size."""
    raw = torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255 for im in images]))
    raw = raw.permute(0, 3, 1, 2)
    if raw.shape != pixels.shape:
        return None
    scales, offsets = [], []
    for c in range(raw.shape[1]):  # least squares in closed form, in float64
        x, y = raw[:, c].flatten().double(), pixels[:, c].flatten().double()
        scale = float(((x - x.mean()) * (y - y.mean())).mean() / (x - x.mean()).pow(2).mean().clamp_min(1e-12))
        scales.append(scale)
        offsets.append(float(y.mean() - scale * x.mean()))
    return torch.tensor(scales).view(1, -1, 1, 1), torch.tensor(offsets).view(1, -1, 1, 1)


def run_residual(
    request: ResidualRequest, out: Path, *, data_overrides: Sequence[str] = (), progress: bool = True
) -> dict[str, Any]:
    model, cfg = load_run(request.run)
    data_cfg = config_from_dict(apply_overrides(cfg.to_dict(), list(data_overrides))).data
    fit = {
        side: open_source(spec, "train", data_cfg)
        for side, spec in (("from", request.source_from), ("to", request.source_to))
    }
    test = {
        side: open_source(spec, "test", data_cfg)
        for side, spec in (("from", request.source_from), ("to", request.source_to))
    }
    embedder = dual_encoder_embedder(model)
    fit_emb = {side: embedder.embed_images(_images(d, request.max_records)) for side, d in fit.items()}
    test_images = {side: _images(d, request.max_records) for side, d in test.items()}
    test_emb = {side: embedder.embed_images(ims) for side, ims in test_images.items()}
    direction = residual_direction(fit_emb["from"], fit_emb["to"])
    words, captions = _texts(list(fit.values()), request.max_records)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {"v_res": direction.vector.contiguous(), "thr": torch.tensor([direction.threshold])},
        out / "direction.safetensors",
    )
    report: dict[str, Any] = {
        "method": "residual_direction",
        "request": asdict(request),
        "threshold": direction.threshold,
        "test_auc": separation_auc(direction, test_emb["from"], test_emb["to"]),
        "fit_auc": separation_auc(direction, fit_emb["from"], fit_emb["to"]),
        "scores": {side: _stats(direction.score(e)) for side, e in test_emb.items()},
        "words": aligned_texts(direction, words, embedder.embed_texts(words)),
        "captions": aligned_texts(direction, captions, embedder.embed_texts(captions)),
        "command": command_line(),
    }
    after = None
    if request.guide.steps > 0:
        after, report["guided"] = _guided(
            model, direction, embedder, fit["from"], test_images["from"], request, out, progress
        )
    plot_scores(direction, test_emb, after, out / "residual_scores.png")
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    return report


def _stats(scores: Tensor) -> dict[str, float]:
    return {"mean": float(scores.mean()), "sd": float(scores.std()) if len(scores) > 1 else 0.0}


def _guided(
    model: Any,
    direction: Direction,
    embedder: TorchEmbedder,
    fit_from: Dataset,
    test_from: list[Image.Image],
    request: ResidualRequest,
    out: Path,
    progress: bool,
) -> tuple[Tensor, dict[str, Any]]:
    train_pixels = torch.stack([embedder.preprocess(im) for im in _images(fit_from, request.max_records)])
    net, losses = train_guided(model, direction, train_pixels, request.guide, progress)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out / "guide.safetensors")
    before_px = torch.stack([embedder.preprocess(im) for im in test_from])
    with torch.no_grad():
        after_px = net(before_px)
        before_emb, after_emb = embedder.embed_pixels(before_px), embedder.embed_pixels(after_px)
    summary = {
        "settings": asdict(request.guide),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "before": _stats(direction.score(before_emb)),
        "after": _stats(direction.score(after_emb)),
        "share_moved_towards_to": float((direction.score(after_emb) > direction.score(before_emb)).float().mean()),
        "pixel_change_rms": float((after_px - before_px).pow(2).mean().sqrt()),
    }
    mapping = _pixel_map(test_from, before_px)
    if mapping is not None:
        picture_pairs(before_px[:8], after_px[:8], mapping, out / "residual_examples.png")
    return direction.score(after_emb), summary


def picture_pairs(before: Tensor, after: Tensor, mapping: tuple[Tensor, Tensor], path: Path) -> None:
    """Held-out images of the "from" set (top row) and the guided network's outputs (bottom row)."""
    scale, offset = mapping
    fig = Figure(figsize=(1.4 * len(before), 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(before), squeeze=False)
    for row, (label, batch) in enumerate((("before", before), ("after", after))):
        pictures = ((batch - offset) / scale).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        for col, picture in enumerate(pictures):
            ax = axes[row][col]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(label)
    fig.suptitle("held-out images before and after the guided network", fontsize=9)
    fig.savefig(path, dpi=110)


def plot_scores(direction: Direction, test_emb: Mapping[str, Tensor], after: Tensor | None, path: Path) -> None:
    """Histograms of cos(e, v_res) on the test images of both sets (and of the guided outputs)."""
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    series = [("from (test)", direction.score(test_emb["from"])), ("to (test)", direction.score(test_emb["to"]))]
    if after is not None:
        series.append(("from, after the guided network", after))
    for label, scores in series:
        ax.hist(scores.numpy(), bins=30, alpha=0.55, label=label)
    ax.axvline(direction.threshold, color="black", linestyle="--", label="thr = v_pos · v_res")
    ax.set_xlabel("cos(image embedding, v_res)")
    ax.set_ylabel("images")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)


def markdown(report: Mapping[str, Any]) -> str:
    request = report["request"]
    scores = report["scores"]
    lines = [
        "# Residual direction (RAVE)",
        "",
        f"run `{request['run']}`: from `{request['source_from']}` to `{request['source_to']}`, fitted on "
        f"{request['max_records']} train images of each, tested on their test splits.",
        "",
        f"- held-out AUC of cos(e, v_res) for telling the two sets apart: **{report['test_auc']:.3f}** "
        f"(fit: {report['fit_auc']:.3f})",
        f"- scores along v_res (test): from {scores['from']['mean']:.3f} ± {scores['from']['sd']:.3f}, "
        f"to {scores['to']['mean']:.3f} ± {scores['to']['sd']:.3f}; thr = {report['threshold']:.3f}",
        "- words closest to v_res: " + ", ".join(f"{w['text']} ({w['cos']:.2f})" for w in report["words"]),
        "- captions closest to v_res: " + "; ".join(f"{c['text']} ({c['cos']:.2f})" for c in report["captions"][:5]),
    ]
    guided = report.get("guided")
    if guided:
        lines += [
            "",
            f"Guided network ({guided['settings']['steps']} steps; loss {guided['loss_first']:.4f} -> "
            f"{guided['loss_last']:.4f}): held-out 'from' images score {guided['before']['mean']:.3f} before and "
            f"{guided['after']['mean']:.3f} after ({100 * guided['share_moved_towards_to']:.0f}% moved towards "
            f"'to'; pixel change rms {guided['pixel_change_rms']:.3f} in the encoder's input units).",
            "",
            "![before and after](residual_examples.png)",
        ]
    lines += ["", "![scores along the direction](residual_scores.png)", "", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)
