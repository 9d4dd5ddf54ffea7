"""HQ-CLIP tag-classification head.

Wei et al. 2025, "HQ-CLIP: Leveraging Large Vision-Language Models to Create
High-Quality Image-Text Datasets and CLIP Models" (README-only release; the head
below is our reading, docs/methods.md A10 [unverified]).

A linear head on the image embedding x_i (``enc.image``, B x D) predicts one
logit per tag of a vocabulary of T tags, z_i = W x_i + b. Targets come from
``enc.tags`` (B x T): 1 = positive tag, 0 = explicit negative tag (the VLM said
it is absent), -1 = unknown (masked out); values in (0, 1) are accepted as soft
targets. With M = {(i, k): tags_ik != -1}:

    L_tag = -(1/|M|) sum_{(i,k) in M} [y_ik log sigmoid(z_ik) + (1 - y_ik) log sigmoid(-z_ik)]

(zero when M is empty). HQ-CLIP's loss is L_clip + lam1 L_neg + lam2 L_tag with
unknown lambdas: state them as the recipe weights of ``negclip`` and ``hq_tags``.

``num_tags`` has no default (a recipe must state its vocabulary size);
``vocabulary`` (optional list of T tag strings) is kept as a plain attribute and
in the term's config so checkpoints carry it. The head's input width is lazy:
see :mod:`contrastkit.objectives._heads` for the dry-forward contract.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoded import Encoded
from .base import Term, register_term


def masked_tag_bce(logits: Tensor, tags: Tensor) -> Tensor:
    """BCE-with-logits averaged over the entries whose tag is not -1 (unknown); 0 if there are none."""
    known = tags != -1
    if not bool(known.any()):
        return logits.sum() * 0.0  # keeps the graph (and the head's parameters) connected
    targets = tags.to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits[known], targets[known])


@register_term
class HqTagsTerm(Term):
    name = "hq_tags"
    description = "HQ-CLIP tag head: multi-label BCE from the image embedding (1 pos, 0 explicit neg, -1 unknown)"
    requires: tuple[str, ...] = ("tags",)

    def __init__(self, num_tags: int, vocabulary: list[str] | None = None, bias: bool = True) -> None:
        super().__init__()
        if not isinstance(num_tags, int) or isinstance(num_tags, bool) or num_tags < 1:
            raise ValueError(
                f"hq_tags: num_tags must be a positive integer (the tag vocabulary size), got {num_tags!r}"
            )
        if vocabulary is not None:
            if isinstance(vocabulary, str) or not all(isinstance(t, str) for t in vocabulary):
                raise ValueError("hq_tags: vocabulary must be a list of tag strings")
            vocabulary = list(vocabulary)
            if len(vocabulary) != num_tags:
                raise ValueError(f"hq_tags: vocabulary has {len(vocabulary)} tags but num_tags is {num_tags}")
            if len(set(vocabulary)) != len(vocabulary):
                dupes = sorted({t for t in vocabulary if vocabulary.count(t) > 1})
                raise ValueError(f"hq_tags: vocabulary repeats tag(s) {', '.join(map(repr, dupes))}")
        if not isinstance(bias, bool):
            raise ValueError(f"hq_tags: bias must be true or false, got {bias!r}")
        self.num_tags = num_tags
        self.vocabulary: list[str] | None = vocabulary  # plain attribute: no buffer, saved with the config
        self.head = nn.LazyLinear(num_tags, bias=bias)

    def config(self) -> dict[str, object]:
        """The keyword arguments that rebuild this term (for the checkpoint's JSON config)."""
        return {"num_tags": self.num_tags, "vocabulary": self.vocabulary, "bias": self.head.bias is not None}

    def extra_repr(self) -> str:
        vocab = "none" if self.vocabulary is None else f"{len(self.vocabulary)} tags"
        return f"num_tags={self.num_tags}, vocabulary={vocab}"

    def logits(self, image: Tensor) -> Tensor:
        """B x T tag logits from the (normalised) image embeddings."""
        return self.head(image)

    @torch.no_grad()
    def predict(self, image: Tensor, threshold: float = 0.5) -> list[list[str]] | Tensor:
        """Tags with probability >= threshold: strings when a vocabulary is known, else a B x T bool mask."""
        mask = torch.sigmoid(self.logits(image)) >= threshold
        if self.vocabulary is None:
            return mask
        return [[self.vocabulary[k] for k in row.nonzero().flatten().tolist()] for row in mask]

    def loss(self, enc: Encoded) -> Tensor:
        tags = enc.tags
        assert tags is not None
        if tags.ndim != 2 or tags.shape != (enc.image.shape[0], self.num_tags):
            raise ValueError(
                f"objective term {self.name!r}: tags must be B x num_tags = "
                f"{enc.image.shape[0]} x {self.num_tags}, got {tuple(tags.shape)}"
            )
        valid = (tags == -1) | ((tags >= 0) & (tags <= 1))
        if not bool(valid.all()):
            bad = tags[~valid].flatten()[:5].tolist()
            raise ValueError(
                f"objective term {self.name!r}: tags must be 1 (positive), 0 (negative), -1 (unknown) "
                f"or a soft target in [0, 1]; found {bad}"
            )
        return masked_tag_bce(self.logits(enc.image), tags)
