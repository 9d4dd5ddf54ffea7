"""The `Encoded` batch: everything an objective term may read.

Every tensor here is *global*: the engine gathers it across ranks (gradient
flowing to the local shard) before any term sees it, and ``local_rows`` says
which rows this process owns. Terms are pure functions of this object and never
call ``torch.distributed`` themselves.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor


@dataclass
class Encoded:
    """A batch after the towers.

    Shapes: B rows (global batch), D embedding dims, F raw feature dims,
    V extra views, K hard negatives per row, L tokens.
    """

    image: Tensor  # B x D, L2-normalised image embeddings
    text: Tensor  # B x D, L2-normalised text embeddings
    logit_scale: Tensor  # scalar t = 1/tau (already exponentiated)
    logit_bias: Tensor | None = None  # scalar b for sigmoid losses
    # Raw pooled tower outputs before the shared projection (B x F): terms with
    # their own projector heads (cl2l_local, barlip, siamlip, hq_tags, ...) read these.
    image_features: Tensor | None = None
    text_features: Tensor | None = None
    # Extra augmented views: V x B x D (normalised) and V x B x F (raw).
    image_views: Tensor | None = None
    text_views: Tensor | None = None
    image_view_features: Tensor | None = None
    text_view_features: Tensor | None = None
    # Hard-negative captions: B x K x D (normalised); neg_text_mask B x K is True where valid.
    neg_text: Tensor | None = None
    neg_text_mask: Tensor | None = None
    # Teacher (EMA of the student) and frozen reference (initial model) embeddings.
    teacher_image: Tensor | None = None
    teacher_text: Tensor | None = None
    teacher_neg_text: Tensor | None = None
    teacher_logit_scale: Tensor | None = None
    reference_image: Tensor | None = None
    reference_text: Tensor | None = None
    reference_logit_scale: Tensor | None = None
    # Supervision extras.
    tags: Tensor | None = None  # B x T in {1 positive, 0 negative, -1 unknown}
    group_ids: Tensor | None = None  # B ints: rows with equal ids are positives of each other
    labels: Tensor | None = None  # B class ids
    caption_tokens: Tensor | None = None  # B x L token ids (for captioning terms)
    image_tokens: Tensor | None = None  # B x N x F patch/cell features (for captioning/dense terms)
    pad_token_id: int = 0
    # Rows of the global batch owned by this process (None: all rows).
    local_rows: slice | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.image.shape[0])

    def require(self, term: str, *names: str) -> None:
        """Raise a clear error when a term needs fields the batch does not carry."""
        missing = [n for n in names if getattr(self, n, None) is None and n not in self.extras]
        if missing:
            raise ValueError(
                f"objective term {term!r} needs {', '.join(missing)} but the batch has none; "
                f"use a dataset / recipe that provides {', '.join(missing)} (see `contrastkit objectives`)"
            )

    def upcast(self) -> "Encoded":
        """A copy whose half-precision tensors are float32 (losses are computed outside autocast)."""
        kwargs = {}
        for f in fields(self):
            v = getattr(self, f.name)
            low = isinstance(v, Tensor) and v.dtype in (torch.float16, torch.bfloat16)
            kwargs[f.name] = v.float() if low else v
        return Encoded(**kwargs)

    def to(self, device: torch.device | str) -> "Encoded":
        kwargs = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kwargs[f.name] = v.to(device) if isinstance(v, Tensor) else v
        return Encoded(**kwargs)


ENCODED_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Encoded))
