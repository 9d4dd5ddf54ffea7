"""Contrastive-gap terms: in-modality uniformity, alignment, cross-modal uniformity.

Fahim, Murphy & Fyshe 2024, "It's Not a Modality Gap: Characterizing and
Addressing the Contrastive Gap"; the uniformity and alignment measures are
Wang & Isola 2020, "Understanding Contrastive Representation Learning through
Alignment and Uniformity on the Hypersphere".

With x_i, y_i the L2-normalised image / text embeddings of pair i:

    U_in = 1/2 log mean_{i<j} exp(-t ||x_i - x_j||^2) + 1/2 log mean_{i<j} exp(-t ||y_i - y_j||^2)
    A    = mean_i ||x_i - y_i||^alpha                                  (alpha = 2)
    XU   = log mean_{i != j} exp(-t ||x_i - y_j||^2)                   (t = 2)

L_CUA = L_clip + U_in + A and L_CUAXU = L_CUA + XU (all weights 1) are recipes
of these terms plus ``clip``; the paper trains them with a fixed tau = 0.01.

Every log-mean-exp is computed as a log-sum-exp over the Gram matrix
(||u - v||^2 = 2 - 2 u.v for unit vectors) minus log(count), so no B x B x D
tensor is formed. The values depend on the batch size: compare at equal B.
With fewer than two rows there is no pair, and the uniformity terms return 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..encoded import Encoded
from .base import Term, register_term


def _sq_dist_from_gram(gram: Tensor) -> Tensor:
    """||u - v||^2 = 2 - 2 u.v for unit vectors (clamped at 0 against rounding)."""
    return (2.0 - 2.0 * gram).clamp_min(0.0)


def _log_mean_exp_offdiag(values: Tensor) -> Tensor:
    """log mean_{i != j} exp(values_ij) of a square matrix; 0 when it has no off-diagonal entry."""
    n = values.shape[0]
    if n < 2:
        return values.sum() * 0.0
    eye = torch.eye(n, dtype=torch.bool, device=values.device)
    masked = values.masked_fill(eye, float("-inf"))
    return torch.logsumexp(masked.reshape(-1), dim=0) - math.log(n * (n - 1))


def uniformity_loss(z: Tensor, t: float = 2.0) -> Tensor:
    """Wang & Isola uniformity of one set of unit vectors: log mean_{i<j} exp(-t ||z_i - z_j||^2).

    The mean over i < j equals the mean over i != j (the matrix is symmetric).
    """
    return _log_mean_exp_offdiag(-t * _sq_dist_from_gram(z @ z.t()))


def in_modality_uniformity(image: Tensor, text: Tensor, t: float = 2.0) -> Tensor:
    """U_in = 1/2 U(images) + 1/2 U(texts)."""
    return 0.5 * uniformity_loss(image, t) + 0.5 * uniformity_loss(text, t)


def cross_uniformity_loss(image: Tensor, text: Tensor, t: float = 2.0) -> Tensor:
    """XU = log mean_{i != j} exp(-t ||x_i - y_j||^2) (the positive pairs i = j are left out)."""
    return _log_mean_exp_offdiag(-t * _sq_dist_from_gram(image @ text.t()))


def alignment_loss(image: Tensor, text: Tensor, alpha: float = 2.0) -> Tensor:
    """A = mean_i ||x_i - y_i||^alpha (alpha = 2: mean squared distance of the positive pairs)."""
    sq = (image - text).pow(2).sum(dim=-1)
    if alpha == 2.0:
        return sq.mean()
    return sq.clamp_min(1e-12).pow(alpha / 2.0).mean()


def _check_t(term: str, t: float) -> float:
    t = float(t)
    if not t > 0.0 or not math.isfinite(t):
        raise ValueError(f"{term}: t must be a positive number (the paper uses 2), got {t}")
    return t


@register_term
class UniformityTerm(Term):
    name = "uniformity"
    description = "in-modality uniformity 1/2 log mean exp(-t||x_i-x_j||^2) + same for texts (Fahim et al.)"

    def __init__(self, t: float = 2.0, modality: str = "both") -> None:
        super().__init__()
        self.t = _check_t(self.name, t)
        if modality not in ("both", "image", "text"):
            raise ValueError(f"uniformity: modality must be 'both', 'image' or 'text', got {modality!r}")
        self.modality = modality

    def loss(self, enc: Encoded) -> Tensor:
        if self.modality == "image":
            return uniformity_loss(enc.image, self.t)
        if self.modality == "text":
            return uniformity_loss(enc.text, self.t)
        return in_modality_uniformity(enc.image, enc.text, self.t)


@register_term
class AlignmentTerm(Term):
    name = "alignment"
    description = "alignment of positive pairs: mean_i ||x_i - y_i||^alpha (alpha=2; Fahim et al.)"

    def __init__(self, alpha: float = 2.0) -> None:
        super().__init__()
        alpha = float(alpha)
        if not alpha > 0.0 or not math.isfinite(alpha):
            raise ValueError(f"alignment: alpha must be a positive number (the paper uses 2), got {alpha}")
        self.alpha = alpha

    def loss(self, enc: Encoded) -> Tensor:
        return alignment_loss(enc.image, enc.text, self.alpha)


@register_term
class CrossUniformityTerm(Term):
    name = "cross_uniformity"
    description = "cross-modal uniformity log mean_{i!=j} exp(-t||x_i-y_j||^2) (Fahim et al.)"

    def __init__(self, t: float = 2.0) -> None:
        super().__init__()
        self.t = _check_t(self.name, t)

    def loss(self, enc: Encoded) -> Tensor:
        return cross_uniformity_loss(enc.image, enc.text, self.t)
