"""Matryoshka wrapper: one term's loss over nested prefixes of the embedding.

Kusupati et al. 2022, "Matryoshka Representation Learning" (NeurIPS): with M the nested widths
m_1 < ... < m_n <= D and c_m their weights (1 each by default),

    L = sum_m c_m L_inner(z[:m] / ||z[:m]||)

where every embedding field the inner term reads (image, text, their views, hard negatives, teacher and
reference embeddings) is cut to its first m dims and re-normalised; raw tower features, scalars and
data fields pass unchanged. Each width gets its own copy of the inner term, so a term with heads of its
own sizes them per width. A model trained this way can be served at any m of the list (an index of
the first m dims of its embeddings). As sentence-transformers' MatryoshkaLoss, with every width every step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch.nn.functional as F
from torch import Tensor, nn

from ..encoded import Encoded
from .base import Term, register_term

EMBEDDING_FIELDS = (
    "image",
    "text",
    "image_views",
    "text_views",
    "neg_text",
    "teacher_image",
    "teacher_text",
    "teacher_neg_text",
    "reference_image",
    "reference_text",
)


def prefix(enc: Encoded, width: int) -> Encoded:
    """``enc`` with every embedding field cut to its first ``width`` dims and re-normalised."""
    cut: dict[str, Any] = {
        name: F.normalize(value[..., :width], dim=-1)
        for name in EMBEDDING_FIELDS
        if (value := getattr(enc, name)) is not None
    }
    return dataclasses.replace(enc, **cut)


@register_term
class MatryoshkaTerm(Term):
    name = "matryoshka"
    description = "Matryoshka: a term's loss summed over nested prefixes of the embedding (dims)"

    def __init__(
        self,
        dims: Sequence[int] = (),
        term: str = "clip",
        weights: Sequence[float] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from . import build_term  # the package imports this module while it is being built

        widths = [int(d) for d in dims]
        if not widths or any(d <= 0 for d in widths) or widths != sorted(set(widths)):
            raise ValueError(f"dims must be increasing positive widths, e.g. [16, 32, 64], got {list(dims)}")
        if term == self.name:
            raise ValueError("term: a matryoshka term cannot wrap another matryoshka term")
        self.dims = widths
        self.weights = [1.0] * len(widths) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(widths):
            raise ValueError(f"weights: {len(self.weights)} values for {len(widths)} dims")
        where = f"matryoshka.term {term!r}"
        inner = [build_term({"name": term, **(params or {})}, where=where)[0] for _ in widths]
        self.inner = nn.ModuleList(inner)
        self.requires = tuple(inner[0].requires)
        self.model_defaults = dict(inner[0].model_defaults)

    def loss(self, enc: Encoded) -> Tensor:
        width = enc.image.shape[-1]
        if self.dims[-1] > width:
            raise ValueError(f"objective term 'matryoshka': dims go up to {self.dims[-1]} but embeddings have {width}")
        total: Tensor | None = None
        for m, weight, term in zip(self.dims, self.weights, cast(Sequence[Term], self.inner)):
            value = weight * term(prefix(enc, m))
            total = value if total is None else total + value
        assert total is not None
        return total

    def on_step_end(self) -> None:
        for term in cast(Sequence[Term], self.inner):
            term.on_step_end()
