"""Small shared pieces for InfoNCE-shaped terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """CE(L, P) = -(1/R) sum_i sum_j P_ij log softmax_j(L_i.) over the R rows of ``logits``."""
    return -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def smoothed_identity(rows: int, cols: int, eps: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Label-smoothed one-hot targets P = (1 - eps) I + eps / C (C = number of columns)."""
    target = torch.full((rows, cols), eps / cols, device=device, dtype=dtype)
    target[torch.arange(rows), torch.arange(rows)] += 1.0 - eps
    return target


def info_nce(logits: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of each row against its diagonal column, optionally label-smoothed.

    ``logits`` is R x C with the positive of row i in column i (C >= R; extra
    columns are negatives and receive smoothing mass too).
    """
    rows = logits.shape[0]
    labels = torch.arange(rows, device=logits.device)
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
