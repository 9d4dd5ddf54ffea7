"""WiSE-FT: weight-space ensembling of a fine-tuned model with the model it started from.

Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022. For a mixing coefficient α,

    θ(α) = (1 − α) · θ_start + α · θ_finetuned,        α ∈ [0, 1]

interpolates every floating-point weight (integer buffers must agree). θ(0) is the start, θ(1) the
fine-tuned model. The paper's finding: intermediate α keep much of the start's accuracy on the
distribution it was good at (the *source*) while keeping most of the fine-tuned gain on the *target*,
so the curve of (source accuracy, target accuracy) over α bends outward, beyond the straight line
between the two end points. :func:`sweep` evaluates zero-shot accuracy on both data sources for each
α, on a validation split (where α is chosen) and a test split (what is reported).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.records import Dataset
from ..evaluate.request import EvalRequest
from ..evaluate.suite import run_suite
from ..models.dual_encoder import DualEncoder
from ..models.loaded import LoadedModel

SELECT = ("mean", "source", "target")


def interpolate(start: Mapping[str, Tensor], tuned: Mapping[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """θ(α) = (1 − α) θ_start + α θ_tuned for every floating-point tensor; the two must hold the same keys
    and shapes (the same architecture), and their integer tensors must be equal."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if set(start) != set(tuned):
        only = sorted(set(start) ^ set(tuned))[:5]
        raise ValueError(f"the two models hold different weights ({', '.join(only)}): not the same architecture")
    mixed: dict[str, Tensor] = {}
    for key, a in start.items():
        b = tuned[key]
        if a.shape != b.shape:
            raise ValueError(f"{key}: shape {tuple(a.shape)} vs {tuple(b.shape)}: not the same architecture")
        if a.is_floating_point():
            mixed[key] = torch.lerp(a.double(), b.double(), alpha).to(b.dtype)
        elif torch.equal(a, b):
            mixed[key] = b.clone()
        else:
            raise ValueError(f"{key}: integer tensors differ between the models; they cannot be interpolated")
    return mixed


def zero_shot_accuracy(
    model: DualEncoder, dataset: Dataset, *, max_records: int | None, seed: int = 0
) -> dict[str, float]:
    """Zero-shot top-1 accuracy of every zero-shot task of ``dataset``, and their ``mean``."""
    loaded = LoadedModel.of_dual_encoder(model, "wise-ft")
    request = EvalRequest(tasks=["zeroshot"], dataset=dataset, max_records=max_records, progress=False, seed=seed)
    results = run_suite(loaded, request).results["zeroshot"]
    accuracy = {task: float(metrics["acc1"]) for task, metrics in results.items()}
    accuracy["mean"] = sum(accuracy.values()) / len(accuracy)
    return accuracy


@dataclass
class Point:
    """One α of the sweep on one split: zero-shot accuracy per task on the source and the target."""

    alpha: float
    split: str
    source: dict[str, float]
    target: dict[str, float]

    def score(self, metric: str, select: str) -> float:
        """What α is chosen by: the ``metric`` task's accuracy on the source, the target, or their mean."""
        if select == "source":
            return self.source[metric]
        if select == "target":
            return self.target[metric]
        return 0.5 * (self.source[metric] + self.target[metric])


def choose_alpha(points: Sequence[Point], metric: str, select: str, split: str) -> float:
    """The α whose ``split`` point scores highest (:meth:`Point.score`); the smallest α among ties."""
    if select not in SELECT:
        raise ValueError(f"select must be one of {', '.join(SELECT)}, got {select!r}")
    candidates = sorted((p for p in points if p.split == split), key=lambda p: p.alpha)
    if not candidates:
        raise ValueError(f"no point of the sweep on the {split} split")
    return max(candidates, key=lambda p: (p.score(metric, select), -p.alpha)).alpha


def beats_both_ends(points: Sequence[Point], metric: str, split: str) -> list[float]:
    """The α strictly inside (0, 1) whose source accuracy beats the fine-tuned end point's and whose target
    accuracy beats the start's. Any curve that moves steadily between the end points does this; the
    paper's outward bend is the stronger :func:`above_chord`."""
    by_alpha = {p.alpha: p for p in points if p.split == split}
    if 0.0 not in by_alpha or 1.0 not in by_alpha:
        return []
    start, tuned = by_alpha[0.0], by_alpha[1.0]
    return [
        a
        for a, p in sorted(by_alpha.items())
        if 0.0 < a < 1.0 and p.source[metric] > tuned.source[metric] and p.target[metric] > start.target[metric]
    ]


def above_chord(points: Sequence[Point], metric: str, split: str) -> list[float]:
    """The α inside (0, 1) whose target accuracy lies above the straight line between the two end points,
    at the α's own source accuracy: a better trade-off than any mix of the end points' predictions would
    promise, which is the paper's stronger claim (its curves lie above that line)."""
    by_alpha = {p.alpha: p for p in points if p.split == split}
    if 0.0 not in by_alpha or 1.0 not in by_alpha:
        return []
    (s0, t0), (s1, t1) = ((by_alpha[a].source[metric], by_alpha[a].target[metric]) for a in (0.0, 1.0))
    if s0 == s1:
        return [a for a, p in sorted(by_alpha.items()) if 0.0 < a < 1.0 and p.target[metric] > max(t0, t1)]
    return [
        a
        for a, p in sorted(by_alpha.items())
        if 0.0 < a < 1.0 and p.target[metric] > t0 + (t1 - t0) * (p.source[metric] - s0) / (s1 - s0)
    ]
