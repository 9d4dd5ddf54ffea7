"""The base-to-new protocol of the prompt-learning literature (CoCoOp, Zhou et al. CVPR 2022).

A task's classes are split in halves in their listed order: the first ⌈C/2⌉ are the *base* classes, the
rest the *new* ones. A method sees shots of the base classes only; it is scored on the base classes' test
images among the base classes (Ba) and on the new classes' test images among the new classes (Nw), and
summarised by their harmonic mean H = 2 · Ba · Nw / (Ba + Nw).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def split_classes(n_classes: int) -> tuple[Tensor, Tensor]:
    """(base, new) class ids: the first ⌈C/2⌉ classes and the rest."""
    if n_classes < 2:
        raise ValueError(f"base-to-new needs at least 2 classes, the task has {n_classes}")
    half = math.ceil(n_classes / 2)
    return torch.arange(half), torch.arange(half, n_classes)


def harmonic_mean(base: float, new: float) -> float:
    """H = 2 · Ba · Nw / (Ba + Nw) (0 when both are 0)."""
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def among(labels: Tensor, classes: Tensor) -> Tensor:
    """Indices of the rows whose label is one of ``classes``."""
    return torch.nonzero(torch.isin(labels, classes)).flatten()
