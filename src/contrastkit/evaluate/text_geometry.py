"""Geometry of text embeddings: alignment and uniformity (Wang & Isola 2020), anisotropy (Ethayarajh 2019).

For unit embeddings of paired texts (a_i, b_i) and of all texts x:

    alignment  = mean_i ||u(a_i) - u(b_i)||^2                    (lower: positives closer)
    uniformity = log mean_{i<j} exp(-2 ||u(x_i) - u(x_j)||^2)     (lower: spread over the sphere)
    anisotropy = mean_{i != j} u(x_i) . u(x_j)                   (0: no common direction; SimCSE and
                                                                  WhitenedCSE report it falling)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .geometry import alignment, uniformity


def anisotropy(x: Tensor) -> float:
    """Mean cosine between distinct rows of ``x``: (|sum u|^2 - n) / (n (n - 1))."""
    u = F.normalize(x.to(torch.float64), dim=-1)
    n = u.shape[0]
    if n < 2:
        raise ValueError("anisotropy needs at least 2 embeddings")
    total = u.sum(0)
    return float(((total @ total) - n) / (n * (n - 1)))


def text_geometry(anchors: Tensor, positives: Tensor) -> dict[str, float]:
    """alignment of the pairs, uniformity and anisotropy of every embedding."""
    every = torch.cat([anchors, positives])
    return {
        "alignment": alignment(anchors, positives),
        "uniformity": uniformity(every),
        "anisotropy": anisotropy(every),
    }
