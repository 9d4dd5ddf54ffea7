"""CWCL: continuously weighted contrastive loss.

Srinivasa et al. 2023, "CWCL: Cross-Modal Transfer with Continuously Weighted
Contrastive Loss" (NeurIPS 2023). No code was released; this follows the
paper's equations.

One side is frozen (LiT-style); q are embeddings of the frozen side, p of the
trained side. Instead of the one-hot targets of InfoNCE, every pair (i, j)
gets a weight from the frozen side's intra-modal similarity,

    w_ij = f(q_i . q_j),   f = (s + 1) / 2 ("affine", the paper's choice)
                           or clamp((s - thr) / (1 - thr), 0, 1) ("clamp")
    P_ij = w_ij / sum_k w_ik
    L_cwcl = 1/2 [ CE(t S, P) + CE(t S^T, P) ]      S = X Y^T (images x texts)

(w_ii = 1; W is symmetric, so both directions use the same row-normalised
P; which modality is "p" therefore only decides where the weights come from.)
w = I recovers CLIP / LiT.

Where q comes from (``frozen`` x ``weight_source``):

- ``weight_source="embedding"`` (default): the frozen side's own embedding in
  the batch, ``enc.text`` for ``frozen="text"`` (the default: text tower frozen,
  e.g. a sentence-transformer), ``enc.image`` for ``frozen="image"``.
- ``"teacher"``: ``enc.teacher_text`` / ``enc.teacher_image``, e.g. a fixed
  sentence encoder whose embeddings the data pipeline supplies while both towers
  train.
- ``"reference"``: ``enc.reference_text`` / ``enc.reference_image``, the frozen
  initial model.

Weights never take a gradient and must come from the global batch (the engine
gathers them with the rest of ``Encoded``). Pitfall: unrelated captions often
have q.q > 0, so affine weights are >= ~0.5 and at large B the target is
nearly uniform; "clamp" with a threshold sharpens it. The engine can log
:func:`cwcl_target_entropy` (via :meth:`CwclTerm.target_entropy`) to watch it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..encoded import Encoded
from .base import Term, register_term
from .functional import soft_cross_entropy

WEIGHT_MAPS = ("affine", "clamp")
FROZEN_SIDES = ("text", "image")
WEIGHT_SOURCES = ("embedding", "teacher", "reference")


def cwcl_weights(q: Tensor, weight_map: str = "affine", threshold: float = 0.0) -> Tensor:
    """B x B similarity-to-weight map of the frozen side's embeddings (no gradient, w_ii = 1)."""
    with torch.no_grad():
        sim = q.detach() @ q.detach().t()
        if weight_map == "affine":
            w = (sim + 1.0) / 2.0
        elif weight_map == "clamp":
            w = ((sim - threshold) / (1.0 - threshold)).clamp(0.0, 1.0)
        else:
            raise ValueError(f"cwcl: weight_map must be one of {WEIGHT_MAPS}, got {weight_map!r}")
        w.fill_diagonal_(1.0)
    return w


def cwcl_targets(weights: Tensor) -> Tensor:
    """Row-normalised targets P_ij = w_ij / sum_k w_ik."""
    return weights / weights.sum(dim=-1, keepdim=True)


def cwcl_target_entropy(targets: Tensor, normalized: bool = False) -> Tensor:
    """Mean row entropy of P in nats (``normalized``: divided by log B, so 1 = uniform, 0 = one-hot)."""
    p = targets.detach()
    ent = -(torch.special.xlogy(p, p)).sum(dim=-1).mean()
    if normalized:
        n = p.shape[-1]
        return ent / math.log(n) if n > 1 else ent * 0.0
    return ent


def cwcl_loss(image: Tensor, text: Tensor, logit_scale: Tensor, targets: Tensor) -> Tensor:
    """1/2 [CE(t S, P) + CE(t S^T, P)] with S = image @ text^T."""
    logits = logit_scale * image @ text.t()
    return (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.t(), targets)) / 2


@register_term
class CwclTerm(Term):
    name = "cwcl"
    description = "CWCL: InfoNCE with soft targets weighted by the frozen side's intra-modal similarity"

    def __init__(
        self, frozen: str = "text", weight_source: str = "embedding", weight_map: str = "affine", threshold: float = 0.0
    ) -> None:
        super().__init__()
        if frozen not in FROZEN_SIDES:
            raise ValueError(f"cwcl: frozen must be one of {FROZEN_SIDES}, got {frozen!r}")
        if weight_source not in WEIGHT_SOURCES:
            raise ValueError(f"cwcl: weight_source must be one of {WEIGHT_SOURCES}, got {weight_source!r}")
        if weight_map not in WEIGHT_MAPS:
            raise ValueError(f"cwcl: weight_map must be one of {WEIGHT_MAPS}, got {weight_map!r}")
        threshold = float(threshold)
        if not -1.0 <= threshold < 1.0:
            raise ValueError(f"cwcl: threshold must be in [-1, 1), got {threshold}")
        if threshold != 0.0 and weight_map != "clamp":
            raise ValueError("cwcl: threshold only applies to weight_map='clamp'")
        self.frozen, self.weight_source, self.weight_map, self.threshold = frozen, weight_source, weight_map, threshold
        self.weight_field = frozen if weight_source == "embedding" else f"{weight_source}_{frozen}"
        self.requires = () if weight_source == "embedding" else (self.weight_field,)

    def weights(self, enc: Encoded) -> Tensor:
        enc.require(self.name, *self.requires)
        q = getattr(enc, self.weight_field)
        if q.shape[0] != enc.batch_size:
            raise ValueError(
                f"objective term 'cwcl': {self.weight_field} has {q.shape[0]} rows, the batch {enc.batch_size}"
            )
        return cwcl_weights(q, self.weight_map, self.threshold)

    def target_entropy(self, enc: Encoded, normalized: bool = False) -> Tensor:
        """Mean entropy of this batch's CWCL targets (for logging)."""
        return cwcl_target_entropy(cwcl_targets(self.weights(enc)), normalized)

    def loss(self, enc: Encoded) -> Tensor:
        targets = cwcl_targets(self.weights(enc)).to(enc.image.dtype)
        return cwcl_loss(enc.image, enc.text, enc.logit_scale, targets)
