"""One batch through the models: a collated :class:`~contrastkit.data.batch.Batch` -> :class:`Encoded`.

The first side of a pair is the image through the image tower, or, in a text-pair batch (``anchors``), the
anchor text through the text tower (``Encoded.image`` then holds the anchors' embeddings).

Only what the objective requires is computed (the field table of ``encoded.py`` says who
produces what): hard-negative captions when a term reads ``neg_text`` (or its mask), extra
views when it reads a view field, cell features for ``image_tokens``, token ids for
``caption_tokens``, teacher / reference embeddings when a frozen copy is kept, and every
data-produced field whose row the batch carries (``group_ids`` always; ``tags`` and
``labels`` when the training set was built to produce them).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TypedDict, cast

import torch
from torch import Tensor

from ..data.batch import Batch
from ..encoded import FIELDS, Encoded
from ..models.dual_encoder import DualEncoder
from ..models.towers import TokenFeatures
from .cell_masks import mask_pixels, random_cell_masks

VIEW_FIELDS = frozenset({"image_views", "text_views", "image_view_features", "text_view_features"})
NEGATIVE_FIELDS = frozenset({"neg_text", "neg_text_mask"})
MASKED_FIELDS = frozenset({"masked_image_tokens", "cell_mask", "teacher_image_tokens"})
# What _frozen_copy_fields computes for a teacher / reference copy (the views' cells are computed apart).
COPY_FIELDS = {
    prefix: frozenset(f"{prefix}_{name}" for name in ("image", "text", "neg_text", "logit_scale"))
    for prefix in ("teacher", "reference")
}


class LiveScalars(TypedDict):
    """The unbatched student fields that carry gradient (keyword arguments of :class:`Encoded`)."""

    logit_scale: Tensor
    logit_bias: Tensor | None


def live_scalars(model: DualEncoder) -> LiveScalars:
    """The unbatched student fields that carry gradient: read from the model whenever a loss is formed."""
    return {"logit_scale": model.logit_scale, "logit_bias": model.logit_bias}


def _negative_tokens(model: DualEncoder, negatives: list[list[str]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Tokens of every row's K hard negatives (B*K x L, padded with empty captions) and the B x K validity mask."""
    k = max((len(n) for n in negatives), default=0)
    if k == 0:
        raise ValueError(
            "a term needs hard-negative captions (neg_text) but no record of this batch has any; "
            "use data with negative captions (synthetic:shapes has them)"
        )
    flat = [n[j] if j < len(n) else "" for n in negatives for j in range(k)]
    mask = torch.tensor([[j < len(n) for j in range(k)] for n in negatives], device=device)
    return model.tokenize(flat).to(device), mask


def _first_side(model: DualEncoder, first: Tensor, text_pairs: bool) -> Tensor:
    """Features of the pair's first side: the image tower on pixels, or the text tower on a text pair's anchors."""
    return model.text_features(first) if text_pairs else model.image_features(first)


def _project_first(model: DualEncoder, features: Tensor, text_pairs: bool) -> Tensor:
    return model.project_text(features) if text_pairs else model.project_image(features)


def _frozen_copy_fields(
    model: DualEncoder,
    first: Tensor,
    tokens: Tensor,
    neg_tokens: Tensor | None,
    neg_shape: tuple[int, ...],
    prefix: str,
    text_pairs: bool,
) -> dict[str, Tensor]:
    """Embeddings of a frozen copy (teacher / reference) of the same batch, without gradient.

    The copy shares the student's tokenizer, so the student's tokens are reused.
    """
    with torch.no_grad():
        out = {
            f"{prefix}_image": _project_first(model, _first_side(model, first, text_pairs), text_pairs),
            f"{prefix}_text": model.encode_text(tokens),
            f"{prefix}_logit_scale": model.logit_scale.detach(),
        }
        if neg_tokens is not None:
            out[f"{prefix}_neg_text"] = model.encode_text(neg_tokens).view(*neg_shape, -1)
    return out


def _view_fields(model: DualEncoder, batch: Batch, device: torch.device) -> dict[str, Tensor]:
    """The V extra views of every row through the student: embeddings and raw features, V x B x ...

    A text pair's views are its anchor and positive encoded again: the towers' dropout makes them differ
    (SimCSE's and WhitenedCSE's augmentation).
    """
    if batch.text_views is None or (batch.image_views is None and batch.anchors is None):
        raise ValueError("a term reads extra views but the batch has none; set data.views (e.g. 2)")
    v, b = len(batch.text_views), len(batch)
    text_pairs = batch.anchors is not None
    if batch.anchors is not None:
        inputs = model.tokenize(batch.anchors * v).to(device)
    else:
        assert batch.image_views is not None
        inputs = batch.image_views.to(device).flatten(0, 1)  # V x B x C x H x W -> VB x C x H x W
    features = _first_side(model, inputs, text_pairs)
    first = _project_first(model, features, text_pairs)
    captions = [c for view in batch.text_views for c in view]
    text_features = model.text_features(model.tokenize(captions).to(device))
    return {
        "image_view_features": features.view(v, b, -1),
        "image_views": first.view(v, b, -1),
        "text_view_features": text_features.view(v, b, -1),
        "text_views": model.project_text(text_features).view(v, b, -1),
    }


def _view_cells(model: DualEncoder, batch: Batch, device: torch.device) -> Tensor:
    """The extra image views' cell features through ``model``'s image tower: V x B x N x F."""
    if batch.image_views is None:
        raise ValueError(
            "a dense term reads the views' cells but the batch has no image views; set data.views (e.g. 2)"
        )
    v, b = batch.image_views.shape[:2]
    cells = cast(TokenFeatures, model.image_tower).forward_tokens(batch.image_views.to(device).flatten(0, 1))
    return cells.view(v, b, *cells.shape[1:])


def _masked_cells(
    enc: Encoded,
    model: DualEncoder,
    teacher: DualEncoder | None,
    batch: Batch,
    pixels: Tensor,
    requires: Collection[str],
) -> None:
    """The student's cells of the images with random cells hidden, the mask, and the teacher's cells of the whole."""
    tower = model.image_tower
    grid = int(getattr(tower, "grid", 0) or 0)
    if not grid:
        raise ValueError(
            f"masked image modelling needs an image tower with a cell grid; {type(tower).__name__} has none"
        )
    enc.cell_mask = random_cell_masks(batch.index, batch.epoch, grid * grid).to(pixels.device)
    enc.masked_image_tokens = cast(TokenFeatures, tower).forward_tokens(mask_pixels(pixels, enc.cell_mask, grid))
    if teacher is not None and "teacher_image_tokens" in requires:
        with torch.no_grad():
            enc.teacher_image_tokens = cast(TokenFeatures, teacher.image_tower).forward_tokens(pixels)


def encode_batch(
    model: DualEncoder,
    batch: Batch,
    requires: Collection[str] = (),
    teacher: DualEncoder | None = None,
    reference: DualEncoder | None = None,
) -> Encoded:
    """The :class:`Encoded` of ``batch``: what ``requires`` names, plus the always-present fields."""
    device = model.log_logit_scale.device
    text_pairs = batch.anchors is not None
    if text_pairs:
        first = model.tokenize(cast(list[str], batch.anchors)).to(device)
    else:
        first = batch.pixels.to(device, non_blocking=True)
    tokens = model.tokenize(batch.captions).to(device)
    image_features = _first_side(model, first, text_pairs)
    text_features = model.text_features(tokens)
    enc = Encoded(
        image=_project_first(model, image_features, text_pairs),
        text=model.project_text(text_features),
        image_features=image_features,
        text_features=text_features,
        pad_token_id=model.pad_token_id,
        **live_scalars(model),
    )
    for name, spec in FIELDS.items():
        if spec.producer == "data" and batch.has_row(spec.batch_key):
            setattr(enc, name, batch.row(spec.batch_key).to(device))
    if "caption_tokens" in requires:
        enc.caption_tokens = tokens
    if "image_tokens" in requires:
        # preflight checked that the image tower has forward_tokens (the field's model_attr) and the data has images
        enc.image_tokens = cast(TokenFeatures, model.image_tower).forward_tokens(first)
    neg_tokens = None
    if NEGATIVE_FIELDS & set(requires):
        neg_tokens, enc.neg_text_mask = _negative_tokens(model, batch.neg_captions, device)
        enc.neg_text = model.encode_text(neg_tokens).view(*enc.neg_text_mask.shape, -1)
    if VIEW_FIELDS & set(requires):
        for name, value in _view_fields(model, batch, device).items():
            setattr(enc, name, value)
    if MASKED_FIELDS & set(requires):
        _masked_cells(enc, model, teacher, batch, first, requires)
    if "image_view_tokens" in requires:
        enc.image_view_tokens = _view_cells(model, batch, device)
    if teacher is not None and "teacher_image_view_tokens" in requires:
        with torch.no_grad():
            enc.teacher_image_view_tokens = _view_cells(teacher, batch, device)
    neg_shape = tuple(enc.neg_text_mask.shape) if enc.neg_text_mask is not None else (0, 0)
    for copy, prefix, negatives in ((teacher, "teacher", neg_tokens), (reference, "reference", None)):
        if copy is not None and COPY_FIELDS[prefix] & set(requires):
            fields = _frozen_copy_fields(copy, first, tokens, negatives, neg_shape, prefix, text_pairs)
            for key, value in fields.items():
                setattr(enc, key, value)
    return enc
