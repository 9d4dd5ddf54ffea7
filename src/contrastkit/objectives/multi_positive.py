"""Multi-positive contrastive loss: several captions per image as soft targets.

Rows of the batch that share ``Encoded.group_ids`` (e.g. the 5 COCO captions
of one image, each its own row with a copy of the image) are positives of each
other. With pos(i) = {j : g_j = g_i} (i included):

    P_ij = 1[j in pos(i)] / |pos(i)|
    L = 1/2 [ CE(t S, P) + CE(t S^T, P) ]        S = X Y^T

This is the cross-modal form of the supervised contrastive loss "L_out"
(Khosla et al. 2020, "Supervised Contrastive Learning") and of StableRep's
multi-positive loss (Tian et al. 2023): per direction it equals pytorch-metric-learning's ``SupConLoss`` with
``ref_emb`` = the other modality and temperature 1/t. With all group ids
distinct it is exactly ``clip``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..encoded import Encoded
from .base import Term, register_term
from .functional import soft_cross_entropy


def group_targets(group_ids: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """P_ij = 1[g_i = g_j] / |{k : g_k = g_i}| (B x B, rows sum to 1)."""
    same = (group_ids.reshape(-1, 1) == group_ids.reshape(1, -1)).to(dtype)
    return same / same.sum(dim=-1, keepdim=True)


def multi_positive_loss(image: Tensor, text: Tensor, logit_scale: Tensor, group_ids: Tensor) -> Tensor:
    """Symmetric soft-target InfoNCE with positives = rows of the same group."""
    targets = group_targets(group_ids, image.dtype).to(image.device)
    logits = logit_scale * image @ text.t()
    return (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.t(), targets)) / 2


@register_term
class MultiPositiveTerm(Term):
    name = "multi_positive"
    description = "multi-positive InfoNCE: rows with equal group_ids are positives (uniform soft targets)"
    requires: tuple[str, ...] = ("group_ids",)

    def loss(self, enc: Encoded) -> Tensor:
        assert enc.group_ids is not None
        if enc.group_ids.reshape(-1).shape[0] != enc.batch_size:
            raise ValueError(
                f"objective term 'multi_positive': group_ids has {enc.group_ids.numel()} "
                f"entries, the batch {enc.batch_size}"
            )
        return multi_positive_loss(enc.image, enc.text, enc.logit_scale, enc.group_ids)
