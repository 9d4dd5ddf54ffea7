"""WhitenedCSE shuffled group whitening, as a training-only head on raw tower features.

Zhuo et al. 2023, "WhitenedCSE: Whitening-based Contrastive Learning of Sentence
Embeddings" (ACL; code: SupstarZh/WhitenedCSE, ``ShuffledGroupWhitening``).
Image-text use is our extrapolation (docs/methods.md A12).

For one version X (N x F) of the batch: permute the F dims (a fresh random
permutation per version when ``shuffle``), split them into G groups of d = F/G,
and per group g:

    X_g <- X_g - mean_rows(X_g),   Sigma_g = X_g^T X_g / N,   Sigma_g = U diag(lam) U^T (float64 eigh)
    W_g = U diag(lam + eps)^(-1/2) U^T   (ZCA),   Y_g = X_g W_g

then undo the permutation and apply Linear + Tanh: z = tanh(A y + c). With the
base features x^0 (``{modality}_features``) and the views x^1, x^2
(``{modality}_view_features``), each whitened *separately* (the release splits
sample-major rows into thirds, mixing views of different rows):

    L = sum_{v=1..V} CE(cos(z^0, z^v) / tau, I),   tau = 0.05,

which is docs/methods.md's CE(cos(z1, z2)/0.05, I) + CE(cos(z1, z3)/0.05, I) at V = 2.
``detach_whitening=True`` (default, as the release) treats W as a constant; the
gradient still flows through the centring and X W. False backpropagates through
eigh (unstable when eigenvalues nearly coincide).

The Linear's width equals the feature width and is inferred lazily: see
:mod:`contrastkit.objectives._heads` for the dry-forward contract. Whitening uses
the statistics of the batch it is given in both train and eval mode (there are
no running statistics: it is a loss head, not part of the deployed model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoded import Encoded
from ._heads import LazySquareLinear, check_features
from .base import Term, register_term
from .functional import info_nce


def group_whiten(
    x: Tensor, groups: int, eps: float = 1e-5, perm: Tensor | None = None, detach_whitening: bool = True
) -> Tensor:
    """Centre and ZCA-whiten each group of d = F/G (permuted) dims over the N rows of ``x`` (N x F).

    Computed in float64 and returned in ``x``'s dtype. ``perm`` (length F) permutes the
    dims before grouping; the output is in the original dim order.
    """
    n, f = x.shape
    if f % groups:
        raise ValueError(f"feature width {f} is not divisible by groups={groups}")
    h = x.to(torch.float64)
    if perm is not None:
        h = h[:, perm]
    h = h.reshape(n, groups, f // groups).transpose(0, 1)  # G x N x d
    h = h - h.mean(dim=1, keepdim=True)
    cov = h.transpose(1, 2) @ h / n  # G x d x d
    if detach_whitening:
        cov = cov.detach()
    evals, evecs = torch.linalg.eigh(cov)
    w = evecs @ torch.diag_embed((evals.clamp_min(0) + eps).rsqrt()) @ evecs.transpose(1, 2)
    y = (h @ w).transpose(0, 1).reshape(n, f)
    if perm is not None:
        y = y[:, torch.argsort(perm)]
    return y.to(x.dtype)


def whitened_cse_loss(z_base: Tensor, z_views: list[Tensor], temperature: float = 0.05) -> Tensor:
    """sum_v CE(cos(z_base, z_v) / tau, I) over the views."""
    base = F.normalize(z_base, dim=-1)
    return torch.stack([info_nce(base @ F.normalize(z, dim=-1).t() / temperature) for z in z_views]).sum()


@register_term
class GroupWhiteningTerm(Term):
    name = "group_whitening"
    description = "WhitenedCSE: shuffled group ZCA whitening + Linear/Tanh head, InfoNCE of base vs each view"
    requires: tuple[str, ...] = ("image_features", "image_view_features")  # text_* for modality=text

    def __init__(
        self,
        modality: str = "image",
        groups: int = 128,
        eps: float = 1e-5,
        temperature: float = 0.05,
        shuffle: bool = True,
        detach_whitening: bool = True,
    ) -> None:
        super().__init__()
        if modality not in ("image", "text"):
            raise ValueError(f"group_whitening: modality must be 'image' or 'text', got {modality!r}")
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError(f"group_whitening: groups must be a positive integer, got {groups!r}")
        if not eps > 0:
            raise ValueError(f"group_whitening: eps must be > 0 (it guards zero eigenvalues), got {eps}")
        if not temperature > 0:
            raise ValueError(f"group_whitening: temperature must be > 0, got {temperature}")
        for key, value in (("shuffle", shuffle), ("detach_whitening", detach_whitening)):
            if not isinstance(value, bool):
                raise ValueError(f"group_whitening: {key} must be true or false, got {value!r}")
        self.modality = modality
        self.requires = (f"{modality}_features", f"{modality}_view_features")
        self.groups, self.eps, self.temperature = groups, float(eps), float(temperature)
        self.shuffle, self.detach_whitening = shuffle, detach_whitening
        self.head = nn.Sequential(LazySquareLinear(), nn.Tanh())

    def whiten(self, x: Tensor) -> Tensor:
        perm = torch.randperm(x.shape[1], device=x.device) if self.shuffle else None
        return group_whiten(x, self.groups, self.eps, perm, self.detach_whitening)

    def loss(self, enc: Encoded) -> Tensor:
        base_field, views_field = self.requires
        base, views = getattr(enc, base_field), getattr(enc, views_field)
        check_features(self.name, base_field, base, 2)
        check_features(self.name, views_field, views, 3)
        if views.shape[1:] != base.shape or views.shape[0] < 1:
            raise ValueError(
                f"objective term {self.name!r}: {views_field} must be V x {base.shape[0]} x "
                f"{base.shape[1]} (V >= 1) to match {base_field}, got {tuple(views.shape)}"
            )
        if base.shape[0] < 2:
            raise ValueError(
                f"objective term {self.name!r}: whitening needs at least 2 rows in the global batch, "
                f"got {base.shape[0]}"
            )
        if base.shape[1] % self.groups:
            raise ValueError(
                f"objective term {self.name!r}: {base_field} width {base.shape[1]} is not divisible "
                f"by groups={self.groups}"
            )
        z_base = self.head(self.whiten(base))
        z_views = [self.head(self.whiten(v)) for v in views.unbind(0)]
        return whitened_cse_loss(z_base, z_views, self.temperature)
