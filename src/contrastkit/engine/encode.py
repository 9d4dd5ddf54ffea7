"""One batch through the model: collated batch -> :class:`Encoded`.

Only what the objective asks for is computed: hard-negative captions when a
term requires ``neg_text``, extra views when it requires ``image_views`` /
``text_views`` (or their raw features), cell features for ``image_tokens``,
and teacher / reference embeddings when a term reads them.
"""
from __future__ import annotations

from typing import Any, Collection

import torch
from torch import Tensor

from ..encoded import Encoded
from ..models.dual_encoder import DualEncoder

VIEW_FIELDS = frozenset({"image_views", "text_views", "image_view_features", "text_view_features"})
TEACHER_FIELDS = frozenset({"teacher_image", "teacher_text", "teacher_neg_text", "teacher_logit_scale"})
REFERENCE_FIELDS = frozenset({"reference_image", "reference_text", "reference_logit_scale"})


def _negative_tokens(model: DualEncoder, negatives: list[list[str]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Tokens of every row's K hard negatives (B*K x L, padded with empty captions) and the B x K validity mask."""
    k = max((len(n) for n in negatives), default=0)
    if k == 0:
        raise ValueError("a term needs hard-negative captions (neg_text) but no record of this batch has any; "
                         "use data with negative captions (synthetic:shapes has them)")
    flat = [n[j] if j < len(n) else "" for n in negatives for j in range(k)]
    mask = torch.tensor([[j < len(n) for j in range(k)] for n in negatives], device=device)
    return model.tokenize(flat).to(device), mask


def _side_encodings(model: DualEncoder, pixels: Tensor, tokens: Tensor, neg_tokens: Tensor | None,
                    neg_shape: tuple[int, int], prefix: str) -> dict[str, Tensor]:
    """Embeddings of a frozen copy (teacher / reference) of the same batch, without gradient.

    The copy shares the student's tokenizer, so the student's tokens are reused.
    """
    with torch.no_grad():
        out = {
            f"{prefix}_image": model.encode_image(pixels),
            f"{prefix}_text": model.encode_text(tokens),
            f"{prefix}_logit_scale": model.logit_scale.detach(),
        }
        if neg_tokens is not None:
            out[f"{prefix}_neg_text"] = model.encode_text(neg_tokens).view(*neg_shape, -1)
    return out


def encode_batch(model: DualEncoder, batch: dict[str, Any], requires: Collection[str] = (),
                 teacher: DualEncoder | None = None, reference: DualEncoder | None = None) -> Encoded:
    device = model.log_logit_scale.device
    pixels = batch["pixels"].to(device, non_blocking=True)
    tokens = model.tokenize(batch["captions"]).to(device)
    image_features = model.image_features(pixels)
    text_features = model.text_features(tokens)
    enc = Encoded(
        image=model.project_image(image_features),
        text=model.project_text(text_features),
        logit_scale=model.logit_scale,
        logit_bias=model.logit_bias,
        image_features=image_features,
        text_features=text_features,
        group_ids=batch["index"].to(device),
        pad_token_id=model.pad_token_id,
    )
    if "caption_tokens" in requires:
        enc.caption_tokens = tokens
    if "image_tokens" in requires:
        enc.image_tokens = model.image_tower.forward_tokens(pixels)
    neg_tokens = None
    if "neg_text" in requires or "neg_text_mask" in requires:
        neg_tokens, enc.neg_text_mask = _negative_tokens(model, batch["neg_captions"], device)
        enc.neg_text = model.encode_text(neg_tokens).view(*enc.neg_text_mask.shape, -1)
    if "tags" in requires:
        enc.tags = batch["tag_targets"].to(device)
    if VIEW_FIELDS & set(requires):
        views = batch["image_views"].to(device)  # V x B x C x H x W
        v, b = views.shape[:2]
        feats = model.image_features(views.flatten(0, 1))
        enc.image_view_features = feats.view(v, b, -1)
        enc.image_views = model.project_image(feats).view(v, b, -1)
        captions = [c for view in batch["text_views"] for c in view]
        tfeats = model.text_features(model.tokenize(captions).to(device))
        enc.text_view_features = tfeats.view(v, b, -1)
        enc.text_views = model.project_text(tfeats).view(v, b, -1)
    neg_shape = tuple(enc.neg_text_mask.shape) if enc.neg_text_mask is not None else (0, 0)
    if teacher is not None:
        for key, value in _side_encodings(teacher, pixels, tokens, neg_tokens, neg_shape, "teacher").items():
            setattr(enc, key, value)
    if reference is not None:
        for key, value in _side_encodings(reference, pixels, tokens, None, neg_shape, "reference").items():
            setattr(enc, key, value)
    return enc
