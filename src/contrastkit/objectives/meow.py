"""MEOW: InfoNCE with negatives weighted by disagreement over several clusterings.

Yu & Li 2023, "Heterogeneous Graph Contrastive Learning with Meta-path
Contexts and Weighted Negative Samples" (MEOW, SDM 2023); checked against the
authors' release (``InfoNce`` / ``ProtoNCE`` in code/module/contrast.py).
Applying it to image-text pairs is this library's extrapolation.

C k-means runs (of different sizes, e.g. 100 and 300 clusters) assign every
pair i a cluster c_k(i). A negative that shares clusters with the anchor is
likely a false negative and is down-weighted:

    w_ij = C - sum_k 1[c_k(i) = c_k(j)]            (so w_ii = 0)
    L_i  = -log [ exp(s_ii / tau) / sum_j w_ij exp(s_ij / tau) ]
    L_meow = mean_i L_i   (+ proto_weight * ProtoNCE)       tau = 0.4

s_ij = x_i.y_j; with ``symmetric=True`` (default) the image->text and
text->image directions are averaged (the release has one direction between
two graph views). w_ii = 0 drops the positive from the denominator, so the
loss can be negative. A row whose every weight is 0 has no negative and an
undefined loss (0 in the denominator): it is left out of the mean, and a batch
in which no row has a negative gives 0. With cluster weights that happens only
when all rows share every cluster (e.g. B = 1); general weights (AdaMEOW-style)
can zero single rows.

Inputs (``Encoded.extras`` keys, all global like the rest of the batch):

- ``extras["cluster_ids"]``: C x B (or B) long tensor, the assignments of the
  C clusterings for the rows of this batch. The engine keeps them when the
  recipe has a ``clusters`` section (k-means of every training record,
  re-run every ``clusters.every`` steps on the model, EMA teacher or frozen
  reference; see :mod:`contrastkit.engine.clusters` and configs/meow.yaml);
  a custom loop supplies its own.
- without it, ``enc.group_ids`` (B) acts as a single clustering (C = 1):
  w_ij = 1[g_i != g_j], i.e. rows of the same group are removed from each
  other's denominators.
- ProtoNCE (``proto_weight > 0``, the paper's weight is 1; Li et al. 2021,
  "Prototypical Contrastive Learning") additionally needs (the engine's
  clusters provide both) ``extras["cluster_centroids"]``: a list of C tensors k_c x D (L2-normalised
  centroids of each clustering; a C x k x D tensor also works) and optionally
  ``extras["cluster_density"]``: a list of C tensors k_c (per-prototype
  temperatures phi; default: tau for all):

      ProtoNCE(z) = (1/C) sum_c mean_i -log [ exp(z_i.mu_c(i) / phi_c(i)) / sum_k exp(z_i.mu_k / phi_k) ]

  applied to image and text embeddings and averaged. (The release multiplies
  the denominator's mean over prototypes by the number of rows instead of
  summing; that adds the constant log(B / k_c) and changes no gradient.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..encoded import Encoded
from .base import Term, register_term

SOURCES = ("auto", "clusters", "groups")


def meow_weights(cluster_ids: Tensor) -> Tensor:
    """w_ij = C - sum_k 1[c_k(i) = c_k(j)] for C x B (or B) cluster ids; B x B, zero diagonal."""
    ids = cluster_ids.reshape(1, -1) if cluster_ids.dim() == 1 else cluster_ids
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)).sum(dim=0)  # B x B
    return (ids.shape[0] - same).to(torch.float32)


def weighted_info_nce(logits: Tensor, weights: Tensor) -> Tensor:
    """mean over rows with some positive weight of -logits_ii + log sum_j w_ij exp(logits_ij)."""
    b = logits.shape[0]
    w = weights.to(device=logits.device, dtype=logits.dtype)
    valid = (w > 0).any(dim=1)  # rows with at least one negative
    if not bool(valid.any()):
        return logits.sum() * 0.0
    log_w = torch.where(w > 0, w.clamp_min(torch.finfo(w.dtype).tiny).log(), torch.full_like(w, float("-inf")))
    # rows without negatives get a dummy finite row (value discarded) so no NaN reaches the gradient
    log_w = torch.where(valid.unsqueeze(1), log_w, torch.zeros_like(log_w))
    denom = torch.logsumexp(logits + log_w, dim=1)
    per_row = denom - logits.diagonal()[:b]
    return per_row[valid].mean()


def meow_loss(
    image: Tensor, text: Tensor, weights: Tensor, logit_scale: Tensor | float, symmetric: bool = True
) -> Tensor:
    logits = logit_scale * image @ text.t()
    loss = weighted_info_nce(logits, weights)
    if symmetric:
        loss = (loss + weighted_info_nce(logits.t(), weights.t())) / 2
    return loss


def proto_nce(
    z: Tensor, cluster_ids: Tensor, centroids: Sequence[Tensor], density: Sequence[Tensor] | None, tau: float
) -> Tensor:
    """Prototypical contrast of embeddings ``z`` (B x D) against each clustering's centroids, averaged."""
    ids = cluster_ids.reshape(1, -1) if cluster_ids.dim() == 1 else cluster_ids
    total = z.new_zeros(())
    for c in range(ids.shape[0]):
        mu = centroids[c].to(device=z.device, dtype=z.dtype)
        if density is None:
            phi = torch.full((mu.shape[0],), tau, dtype=z.dtype, device=z.device)
        else:
            phi = density[c].to(device=z.device, dtype=z.dtype)
        total = total + F.cross_entropy((z @ mu.t()) / phi.unsqueeze(0), ids[c].to(z.device))
    return total / ids.shape[0]


def _as_list(value: Any, name: str, count: int) -> list[Tensor]:
    items = list(value.unbind(0)) if isinstance(value, Tensor) else list(value)
    if len(items) != count:
        raise ValueError(
            f"objective term 'meow': extras[{name!r}] has {len(items)} entries, cluster_ids has {count} clusterings"
        )
    return items


@register_term
class MeowTerm(Term):
    name = "meow"
    description = "MEOW: InfoNCE whose negatives are weighted by cluster disagreement over C k-means runs"

    def __init__(
        self, temperature: float | None = 0.4, symmetric: bool = True, source: str = "auto", proto_weight: float = 0.0
    ) -> None:
        super().__init__()
        if temperature is not None:
            temperature = float(temperature)
            if not temperature > 0.0 or not math.isfinite(temperature):
                raise ValueError(
                    f"meow: temperature must be positive (the paper uses 0.4) or null for the "
                    f"model's logit scale, got {temperature}"
                )
        if source not in SOURCES:
            raise ValueError(f"meow: source must be one of {SOURCES}, got {source!r}")
        proto_weight = float(proto_weight)
        if not proto_weight >= 0.0:
            raise ValueError(f"meow: proto_weight must be >= 0, got {proto_weight}")
        if proto_weight > 0.0 and source == "groups":
            raise ValueError("meow: proto_weight > 0 needs cluster_ids and cluster_centroids, not group_ids")
        self.temperature, self.symmetric, self.source, self.proto_weight = (
            temperature,
            bool(symmetric),
            source,
            proto_weight,
        )
        req: tuple[str, ...] = ()
        if source == "clusters" or proto_weight > 0.0:
            req = ("cluster_ids",)
        elif source == "groups":
            req = ("group_ids",)
        if proto_weight > 0.0:
            req = req + ("cluster_centroids",)
        self.requires = req

    def _cluster_ids(self, enc: Encoded) -> Tensor:
        if self.source in ("auto", "clusters") and "cluster_ids" in enc.extras:
            ids = torch.as_tensor(enc.extras["cluster_ids"])
        elif self.source in ("auto", "groups") and enc.group_ids is not None and self.proto_weight == 0.0:
            ids = enc.group_ids
        else:
            raise ValueError(
                "objective term 'meow' needs extras['cluster_ids'] (C x B k-means assignments) "
                "or group_ids but the batch has neither; use a dataset / recipe that provides "
                "them (see `contrastkit objectives`)"
            )
        if ids.shape[-1] != enc.batch_size or ids.dim() > 2:
            raise ValueError(
                f"objective term 'meow': cluster ids must be C x B or B with B = {enc.batch_size}, "
                f"got {tuple(ids.shape)}"
            )
        return ids.to(enc.image.device)

    def loss(self, enc: Encoded) -> Tensor:
        ids = self._cluster_ids(enc)
        scale = enc.logit_scale if self.temperature is None else 1.0 / self.temperature
        loss = meow_loss(enc.image, enc.text, meow_weights(ids), scale, self.symmetric)
        if self.proto_weight > 0.0:
            count = 1 if ids.dim() == 1 else ids.shape[0]
            centroids = _as_list(enc.extras["cluster_centroids"], "cluster_centroids", count)
            density = enc.extras.get("cluster_density")
            density = None if density is None else _as_list(density, "cluster_density", count)
            tau = float(1.0 / enc.logit_scale.detach()) if self.temperature is None else self.temperature
            proto = (
                proto_nce(enc.image, ids, centroids, density, tau) + proto_nce(enc.text, ids, centroids, density, tau)
            ) / 2
            loss = loss + self.proto_weight * proto
        return loss
