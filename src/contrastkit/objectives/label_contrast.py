"""Input–label contrast: each input against the label descriptions of the batch's classes.

The input–label contrast of the contrastive-learning-in-NLP literature (label-anchored / label-description
contrast for classification): the other side of a pair is a description of the input's class (with text
pairs, ``data.label_column`` makes the positive ``data.class_template`` filled with the class name). For
the rows i with a label (``Encoded.labels`` >= 0), x_i the input (``Encoded.image``: the anchor) and y_i
its description (``Encoded.text``), the batch's classes C' = unique(labels) each get one column, the
normalised mean of their rows' descriptions,

    u_c = normalize( sum_{i: y_i = c} y_i ),      L = mean_i CE( t [x_i . u_c]_{c in C'}, label_i )

with t the model's logit scale, or 1/``temperature`` when given. Unlike in-batch InfoNCE, rows of one class
are never each other's negatives; with every class in the batch it is the classifier that scores by
cosine with the class descriptions (zero-shot classification, trained). ``symmetric`` adds the
description -> inputs direction: CE over the inputs for each class column, targets uniform over its rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..encoded import Encoded
from .base import Term, register_term
from .functional import soft_cross_entropy


def label_contrast_loss(
    inputs: Tensor, descriptions: Tensor, labels: Tensor, scale: Tensor | float, symmetric: bool = False
) -> Tensor:
    """The loss of the module docstring; rows with label < 0 are left out (an error when none is left)."""
    keep = labels.reshape(-1) >= 0
    if not bool(keep.any()):
        raise ValueError("objective term 'label_contrast': no row of the batch has a class label")
    x, y, lab = inputs[keep], descriptions[keep], labels.reshape(-1)[keep]
    classes, target = torch.unique(lab, return_inverse=True)
    members = F.one_hot(target, len(classes)).to(y.dtype)  # N x C'
    columns = F.normalize(members.t() @ y, dim=-1)  # C' x D
    logits = scale * x @ columns.t()
    loss = F.cross_entropy(logits, target)
    if not symmetric:
        return loss
    back = soft_cross_entropy(logits.t(), members.t() / members.sum(0, keepdim=True).t())
    return (loss + back) / 2


@register_term
class LabelContrastTerm(Term):
    name = "label_contrast"
    description = "input-label contrast: inputs vs the descriptions of the batch's classes (labels)"
    requires: tuple[str, ...] = ("labels",)

    def __init__(self, temperature: float | None = None, symmetric: bool = False) -> None:
        super().__init__()
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be > 0 (or null for the model's logit scale), got {temperature}")
        self.temperature = temperature
        self.symmetric = bool(symmetric)

    def loss(self, enc: Encoded) -> Tensor:
        assert enc.labels is not None
        scale = enc.logit_scale if self.temperature is None else 1.0 / self.temperature
        return label_contrast_loss(enc.image, enc.text, enc.labels, scale, self.symmetric)
