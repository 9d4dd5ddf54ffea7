"""Residual visual directions (RAVE): the direction from one image set to another in embedding space.

With unit image embeddings of a "from" set A and a "to" set B,

    v_neg = normalize(mean_a e_a),   v_pos = normalize(mean_b e_b),   v_res = normalize(v_pos - v_neg),
    thr = v_pos · v_res,

v_res is the direction that separates B from A (an image's score along it is cos(e, v_res)), and
thr is where B's centre sits on it. The guidance loss for an image-to-image network Φ (RAVE) pulls
its outputs to B's side, to B's level and not beyond:

    L_guid = mean_b (cos(E(Φ(I_b)), v_res) - thr)²,

with E the frozen image encoder (the target is thr, not 1). Words and captions whose text embedding
lies closest to v_res name the direction, when the vocabulary has a word for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import Tensor


@dataclass(frozen=True)
class Direction:
    """v_res (unit vector) and thr = v_pos · v_res."""

    vector: Tensor
    threshold: float

    def score(self, embeddings: Tensor) -> Tensor:
        """cos(e, v_res) per row."""
        return F.normalize(embeddings.to(self.vector.dtype), dim=-1) @ self.vector


def residual_direction(from_set: Tensor, to_set: Tensor) -> Direction:
    """The direction from the ``from_set`` embeddings (A) to the ``to_set`` embeddings (B); see the module."""
    if len(from_set) == 0 or len(to_set) == 0:
        raise ValueError("residual direction: both image sets need at least one embedding")
    v_neg = F.normalize(F.normalize(from_set, dim=-1).mean(0), dim=0)
    v_pos = F.normalize(F.normalize(to_set, dim=-1).mean(0), dim=0)
    diff = v_pos - v_neg
    if float(diff.norm()) < 1e-8:
        raise ValueError("residual direction: the two image sets have the same mean embedding")
    vector = F.normalize(diff, dim=0)
    return Direction(vector, float(v_pos @ vector))


def guidance_loss(embeddings: Tensor, direction: Direction) -> Tensor:
    """mean_b (cos(e_b, v_res) - thr)² (RAVE's guidance towards the "to" side)."""
    cos = F.normalize(embeddings, dim=-1) @ direction.vector.to(embeddings.dtype)
    return ((cos - direction.threshold) ** 2).mean()


def separation_auc(direction: Direction, from_set: Tensor, to_set: Tensor) -> float:
    """ROC AUC of the score cos(e, v_res) for telling ``to_set`` (positives) from ``from_set``."""
    scores = torch.cat([direction.score(from_set), direction.score(to_set)]).cpu().numpy()
    labels = [0] * len(from_set) + [1] * len(to_set)
    return float(roc_auc_score(labels, scores))


def aligned_texts(direction: Direction, texts: Sequence[str], embeddings: Tensor, k: int = 10) -> list[dict]:
    """The ``k`` texts whose embeddings have the highest cosine with v_res, best first."""
    scores = direction.score(embeddings)
    top = torch.topk(scores, min(k, len(texts))).indices.tolist()
    return [{"text": texts[i], "cos": float(scores[i])} for i in top]
