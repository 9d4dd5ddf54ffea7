"""NegCLIP: CLIP with hard-negative captions as extra columns.

Yuksekgonul et al. 2023, "When and Why Vision-Language Models Behave like
Bags-of-Words, and What to Do About It?" (NegCLIP); layout as in the DeGLA
release (Hu et al. 2025), which this library's ``degla_*`` terms follow.

With x_i, y_i the image / caption of pair i, n_ik (k < K) the K hard-negative
captions of pair i (``Encoded.neg_text``, B x K x D) and m_ik their validity
mask (``Encoded.neg_text_mask``, True = valid; absent = all valid):

    image -> text:  l_i = t [x_i.y_1 .. x_i.y_B, x_i.n_11 .. x_i.n_BK],  CE on column i
                    (all B*K negatives of the batch are columns of every image row;
                     invalid negatives are left out of the softmax)
    text -> image:  CE(t S^T, I) over the B images, positives only
    L_negclip = 1/2 (L_i2t + L_t2i)

With no valid negative this is exactly ``clip``. Columns are laid out
positive-block first, negatives sample-major (column B + i*K + k is n_ik), so
no sample-interleaving index can go wrong.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..encoded import Encoded
from .base import Term, register_term


def check_negatives(term: str, enc: Encoded) -> tuple[Tensor, Tensor | None]:
    """Validate ``neg_text`` (B x K x D) and ``neg_text_mask`` (B x K bool) against the batch."""
    enc.require(term, "neg_text")
    neg = enc.neg_text
    assert neg is not None
    b, d = enc.text.shape
    if neg.dim() != 3 or neg.shape[0] != b or neg.shape[2] != d:
        raise ValueError(f"objective term {term!r}: neg_text must be B x K x D = {b} x K x {d}, got {tuple(neg.shape)}")
    mask = enc.neg_text_mask
    if mask is not None:
        if tuple(mask.shape) != tuple(neg.shape[:2]):
            raise ValueError(
                f"objective term {term!r}: neg_text_mask must be B x K = {tuple(neg.shape[:2])}, "
                f"got {tuple(mask.shape)}"
            )
        mask = mask.to(torch.bool)
    return neg, mask


def negclip_loss(
    image: Tensor, text: Tensor, neg_text: Tensor, logit_scale: Tensor, neg_mask: Tensor | None = None
) -> Tensor:
    """NegCLIP loss; ``neg_text`` is B x K x D (K may be 0), ``neg_mask`` B x K (True = valid)."""
    b, k, d = neg_text.shape
    labels = torch.arange(b, device=image.device)
    logits_pos = logit_scale * image @ text.t()  # B x B
    logits_neg = logit_scale * image @ neg_text.reshape(b * k, d).t()  # B x BK
    if neg_mask is not None:
        logits_neg = logits_neg.masked_fill(~neg_mask.reshape(1, b * k), float("-inf"))
    loss_i2t = F.cross_entropy(torch.cat([logits_pos, logits_neg], dim=1), labels)
    loss_t2i = F.cross_entropy(logits_pos.t(), labels)
    return (loss_i2t + loss_t2i) / 2


@register_term
class NegClipTerm(Term):
    name = "negclip"
    description = "NegCLIP: CLIP with all B*K hard-negative captions as extra image->text columns"
    requires: tuple[str, ...] = ("neg_text",)

    def loss(self, enc: Encoded) -> Tensor:
        neg, mask = check_negatives(self.name, enc)
        return negclip_loss(enc.image, enc.text, neg, enc.logit_scale, mask)
