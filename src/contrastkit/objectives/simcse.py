"""SimCSE: anchor -> (every positive of the batch + hard negatives), at a fixed temperature.

Gao, Yao & Chen 2021, "SimCSE: Simple Contrastive Learning of Sentence Embeddings" (EMNLP; code:
princeton-nlp/SimCSE). In a text-pair batch the anchor h_i is ``Encoded.image`` (the first side), the
positive h_i^+ is ``Encoded.text`` and the hard negatives h_ik^- are ``Encoded.neg_text`` (B x K x D,
invalid ones masked by ``neg_text_mask``). With sim the cosine and tau = ``temperature``:

    supervised (eq. 5):   l_i = -log  e^{sim(h_i, h_i^+)/tau}
                                     / sum_j ( e^{sim(h_i, h_j^+)/tau} + sum_k e^{sim(h_i, h_jk^-)/tau} )
    unsupervised (eq. 1): the same without negatives; h_i and h_i^+ are one sentence under two dropout masks

    L = mean_i l_i                                            (``symmetric: false``, the paper)
    L = 1/2 (mean_i l_i + mean_i CE over anchors of h_i^+)   (``symmetric: true``)

The paper's tau is 0.05; ``temperature: null`` uses the model's learned logit scale instead. This is
sentence-transformers' MultipleNegativesRankingLoss at scale 1/tau = 20 (its symmetric variant with
``symmetric``); with no valid negative and ``symmetric: true`` it is ``clip`` at a fixed temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..encoded import Encoded
from .base import Term, register_term
from .negclip import check_negatives


def simcse_loss(
    anchor: Tensor,
    positive: Tensor,
    scale: Tensor | float,
    neg: Tensor | None = None,
    neg_mask: Tensor | None = None,
    symmetric: bool = False,
) -> Tensor:
    """SimCSE / multiple-negatives ranking loss; ``neg`` is B x K x D (or None), ``neg_mask`` B x K (True = valid)."""
    b = anchor.shape[0]
    labels = torch.arange(b, device=anchor.device)
    logits_pos = scale * anchor @ positive.t()  # B x B
    columns = [logits_pos]
    if neg is not None and neg.shape[1] > 0:
        logits_neg = scale * anchor @ neg.reshape(-1, neg.shape[-1]).t()  # B x BK
        if neg_mask is not None:
            logits_neg = logits_neg.masked_fill(~neg_mask.reshape(1, -1), float("-inf"))
        columns.append(logits_neg)
    forward = F.cross_entropy(torch.cat(columns, dim=1), labels)
    if not symmetric:
        return forward
    return (forward + F.cross_entropy(logits_pos.t(), labels)) / 2


@register_term
class SimCseTerm(Term):
    name = "simcse"
    description = "SimCSE / multiple-negatives ranking: anchor -> in-batch positives (+ hard negatives), tau 0.05"

    def __init__(self, temperature: float | None = 0.05, hard_negatives: bool = True, symmetric: bool = False) -> None:
        super().__init__()
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be > 0 (or null for the model's logit scale), got {temperature}")
        self.temperature = temperature
        self.hard_negatives = bool(hard_negatives)
        self.symmetric = bool(symmetric)
        self.requires = ("neg_text",) if self.hard_negatives else ()

    def loss(self, enc: Encoded) -> Tensor:
        scale = enc.logit_scale if self.temperature is None else 1.0 / self.temperature
        neg, mask = check_negatives(self.name, enc) if self.hard_negatives else (None, None)
        return simcse_loss(enc.image, enc.text, scale, neg, mask, self.symmetric)
