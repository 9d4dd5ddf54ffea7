"""Plots of the run report: loss curve, embedding-gap map, similarity histograms, confusion, recall@k."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from .geometry import modality_gap

if TYPE_CHECKING:
    from matplotlib.typing import LegendLocType  # newer than matplotlib 3.7: imported for the type checker only

IMAGE_COLOR = "#1f77b4"
TEXT_COLOR = "#ff7f0e"
_NON_METRIC_KEYS = {"step", "epoch", "time", "timestamp", "wall", "elapsed", "samples", "split", "kind", "phase"}
_EVAL_PREFIXES = ("eval/", "eval_", "eval.")
_EVAL_SPLITS = {"eval", "val", "valid", "validation", "test"}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _series(
    rows: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, tuple[list[float], list[float]]], dict[str, tuple[list[float], list[float]]]]:
    """(training series, eval series): name -> (steps, values)."""
    train: dict[str, tuple[list[float], list[float]]] = {}
    evals: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        step = _number(row.get("step"))
        if step is None:
            continue
        split = str(row.get("split", row.get("kind", row.get("phase", "")))).lower()
        is_eval_line = split in _EVAL_SPLITS
        for key, value in row.items():
            val = _number(value)
            if val is None or key in _NON_METRIC_KEYS:
                continue
            if key.startswith(_EVAL_PREFIXES):
                name = key[5:]
                target = evals
            elif is_eval_line:
                name, target = key, evals
            elif key == "loss" or key.startswith(("loss/", "loss_")):
                name, target = key, train
            else:
                continue
            steps, vals = target.setdefault(name, ([], []))
            steps.append(step)
            vals.append(val)
    return train, evals


# ----------------------------------------------------------------------------- plots


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


def _label_axes(ax: Axes, xlabel: str, ylabel: str, title: str, legend_loc: LegendLocType | None = None) -> None:
    """Axis labels, title, a light grid and a small legend: the finish every line/scatter plot here shares."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend_loc:
        ax.legend(fontsize="small", loc=legend_loc)
    else:
        ax.legend(fontsize="small")


def _ema(values: Sequence[float], alpha: float) -> list[float]:
    out, acc = [], values[0]
    for v in values:
        acc = alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def plot_loss_curve(rows: Sequence[Mapping[str, Any]], path: str | Path) -> bool:
    """Training loss vs step (left) and evaluation metrics vs step (right, if any); False if no loss."""
    train, evals = _series(rows)
    if "loss" not in train:
        return False
    panels = 2 if evals else 1
    fig = Figure(figsize=(6.5 * panels, 4.5), layout="constrained")
    ax = fig.add_subplot(1, panels, 1)
    steps, loss = train["loss"]
    order = np.argsort(steps, kind="stable")
    steps, loss = [steps[i] for i in order], [loss[i] for i in order]
    if len(loss) >= 50:
        ax.plot(steps, loss, color=IMAGE_COLOR, alpha=0.3, linewidth=1, label="loss")
        ax.plot(steps, _ema(loss, 2.0 / (len(loss) / 20 + 1)), color=IMAGE_COLOR, linewidth=2, label="loss (EMA)")
    else:
        ax.plot(steps, loss, color=IMAGE_COLOR, marker="o" if len(loss) < 20 else None, label="loss")
    terms = [k for k in train if k != "loss"][:6]
    for j, name in enumerate(terms):
        ax.plot(*train[name], linestyle="--", linewidth=1, color=f"C{j + 2}", label=name)
    _label_axes(ax, "step", "loss", "Training loss")
    if evals:
        ax2 = fig.add_subplot(1, panels, 2)
        for name in list(evals)[:8]:
            ax2.plot(*evals[name], marker="o", label=name)
        _label_axes(ax2, "step", "metric value", "Evaluation metrics")
    _save(fig, Path(path))
    return True


def _subsample(x: Tensor, n: int, gen: torch.Generator) -> Tensor:
    if x.shape[0] <= n:
        return x
    return x[torch.randperm(x.shape[0], generator=gen)[:n]]


def plot_embedding_gap(
    image_emb: Tensor, text_emb: Tensor, path: str | Path, *, max_points: int = 2000, seed: int = 0
) -> float:
    """2-D PCA of image and text embeddings together, centroids marked; returns the gap in the title."""
    u = F.normalize(image_emb.detach().cpu().double(), dim=-1)
    v = F.normalize(text_emb.detach().cpu().double(), dim=-1)
    gap = modality_gap(u, v)
    gen = torch.Generator().manual_seed(seed)
    us, vs = _subsample(u, max_points, gen), _subsample(v, max_points, gen)
    joint = torch.cat([us, vs])
    mean = joint.mean(0)
    _, s, vh = torch.linalg.svd(joint - mean, full_matrices=False)
    basis = vh[:2].T  # D x 2 (fewer if D == 1)
    var = (s**2) / (s**2).sum().clamp_min(1e-30)
    proj = lambda z: ((z - mean) @ basis).numpy()  # noqa: E731 - a one-line projection, used four times below
    pu, pv = proj(us), proj(vs)
    cu, cv = proj(u.mean(0, keepdim=True))[0], proj(v.mean(0, keepdim=True))[0]
    if basis.shape[1] < 2:  # one-dimensional embeddings: plot on a line
        pu, pv = np.c_[pu, np.zeros(len(pu))], np.c_[pv, np.zeros(len(pv))]
        cu, cv = np.r_[cu, 0.0], np.r_[cv, 0.0]
    fig = Figure(figsize=(6.5, 6), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(pu[:, 0], pu[:, 1], s=8, alpha=0.5, color=IMAGE_COLOR, label=f"image (n={u.shape[0]})")
    ax.scatter(pv[:, 0], pv[:, 1], s=8, alpha=0.5, color=TEXT_COLOR, label=f"text (n={v.shape[0]})")
    ax.plot([cu[0], cv[0]], [cu[1], cv[1]], color="black", linewidth=1.5, linestyle="--", zorder=3)
    ax.scatter(
        [cu[0]], [cu[1]], s=220, marker="X", color=IMAGE_COLOR, edgecolor="black", zorder=4, label="image centroid"
    )
    ax.scatter(
        [cv[0]], [cv[1]], s=220, marker="X", color=TEXT_COLOR, edgecolor="black", zorder=4, label="text centroid"
    )
    _label_axes(
        ax,
        f"PC1 ({100 * var[0].item():.1f}% of variance)",
        f"PC2 ({100 * var[1].item():.1f}% of variance)" if var.numel() > 1 else "PC2",
        f"Image and text embeddings (joint PCA)\nmodality gap ||mean(img) - mean(txt)|| = {gap:.3f}",
        "best",
    )
    _save(fig, Path(path))
    return gap


def _unmatched_cosines(u: Tensor, v: Tensor, max_pairs: int, gen: torch.Generator) -> Tensor:
    n = u.shape[0]
    if n * (n - 1) <= max_pairs:
        sims = u @ v.T
        return sims[~torch.eye(n, dtype=torch.bool)]
    i = torch.randint(0, n, (max_pairs,), generator=gen)
    j = (i + torch.randint(1, n, (max_pairs,), generator=gen)) % n  # j != i
    return (u[i] * v[j]).sum(-1)


def plot_similarity_hist(
    image_emb: Tensor, text_emb: Tensor, path: str | Path, *, max_unmatched: int = 200_000, seed: int = 0
) -> dict[str, float]:
    """Histograms of matched (u_i.v_i) and unmatched (u_i.v_j, i != j) cosines; returns their means."""
    u = F.normalize(image_emb.detach().cpu().double(), dim=-1)
    v = F.normalize(text_emb.detach().cpu().double(), dim=-1)
    if u.shape != v.shape or u.shape[0] < 2:
        raise ValueError("similarity histogram needs >= 2 matched image/text pairs of equal shape")
    matched = (u * v).sum(-1)
    unmatched = _unmatched_cosines(u, v, max_unmatched, torch.Generator().manual_seed(seed))
    lo = min(matched.min().item(), unmatched.min().item())
    hi = max(matched.max().item(), unmatched.max().item())
    if hi - lo < 1e-6:
        lo, hi = lo - 0.01, hi + 0.01
    bins = np.linspace(lo, hi, 60).tolist()  # the edges as floats (what matplotlib's hist is typed to take)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for vals, color, name in ((unmatched, TEXT_COLOR, "unmatched"), (matched, IMAGE_COLOR, "matched")):
        ax.hist(
            vals.numpy(),
            bins=bins,
            density=True,
            alpha=0.55,
            color=color,
            label=f"{name} (n={vals.numel()}, mean={vals.mean().item():.3f})",
        )
        ax.axvline(vals.mean().item(), color=color, linestyle="--", linewidth=1.5)
    _label_axes(
        ax, "cosine similarity (image, text)", "density", "Cosine similarity of matched vs unmatched image-text pairs"
    )
    _save(fig, Path(path))
    return {"matched_mean": matched.mean().item(), "unmatched_mean": unmatched.mean().item()}


def plot_confusion(
    matrix: Sequence[Sequence[int]], classnames: Sequence[str], path: str | Path, *, title: str = ""
) -> None:
    """Row-normalised confusion matrix (row = true class), counts written in cells when small."""
    m = np.asarray(matrix, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    c = m.shape[0]
    size = min(12.0, 3.0 + 0.35 * c)
    fig = Figure(figsize=(size + 1.2, size), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, label="fraction of the true class")
    ax.set_xticks(range(c), [str(n) for n in classnames], rotation=60, ha="right", fontsize="small")
    ax.set_yticks(range(c), [str(n) for n in classnames], fontsize="small")
    if c <= 15:
        for i in range(c):
            for j in range(c):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(m[i, j])),
                        ha="center",
                        va="center",
                        fontsize="small",
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "Zero-shot confusion matrix")
    _save(fig, Path(path))


def plot_recall_curve(curve: Mapping[str, Sequence[float]], path: str | Path, *, title: str = "") -> None:
    """Recall@k against k (log axis) for text->image and image->text retrieval."""
    ks = list(curve["k"])
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    for key, color, name in (
        ("image_retrieval", IMAGE_COLOR, "text→image (image_retrieval_recall@k)"),
        ("text_retrieval", TEXT_COLOR, "image→text (text_retrieval_recall@k)"),
    ):
        vals = [100 * v if v is not None else np.nan for v in curve.get(key, [])]
        if vals:
            ax.plot(ks, vals, marker="o", color=color, label=name)
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_ylim(0, 100)
    _label_axes(ax, "k", "recall@k (%)", title or "Retrieval recall@k", "lower right")
    _save(fig, Path(path))


def plot_per_class(recall: Mapping[str, Any], path: str | Path, *, title: str = "") -> None:
    """Horizontal bars of per-class recall (classes without images left out)."""
    items = [(name, float(v)) for name, v in recall.items() if isinstance(v, (int, float)) and math.isfinite(float(v))]
    fig = Figure(figsize=(7, max(3.0, 0.22 * len(items) + 1.5)), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(items)), [100 * v for _, v in items], color=IMAGE_COLOR)
    ax.set_yticks(range(len(items)), [n for n, _ in items], fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("recall (%)")
    ax.set_title(title or "Zero-shot per-class recall")
    ax.grid(alpha=0.3, axis="x")
    _save(fig, Path(path))


# ----------------------------------------------------------------------------- markdown
