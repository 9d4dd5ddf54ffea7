"""One batch through the model: collated batch -> :class:`Encoded`.

Only what the objective asks for is computed: hard-negative captions are
encoded when a term requires ``neg_text``, cell features are returned when a
term requires ``image_tokens``, and so on.
"""
from __future__ import annotations

from typing import Any, Collection

import torch

from ..encoded import Encoded
from ..models.dual_encoder import DualEncoder

# Encoded fields the engine knows how to fill, and what the data must carry for them.
PROVIDED_BY_DATA = {"neg_text": "hard-negative captions", "neg_text_mask": "hard-negative captions",
                    "caption_tokens": "captions", "image_tokens": "an image tower with cell features",
                    "image_features": "", "text_features": "", "logit_bias": ""}


def encode_batch(model: DualEncoder, batch: dict[str, Any], requires: Collection[str] = ()) -> Encoded:
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
        pad_token_id=model.pad_token_id,
    )
    if "caption_tokens" in requires:
        enc.caption_tokens = tokens
    if "image_tokens" in requires:
        if not hasattr(model.image_tower, "forward_tokens"):
            raise ValueError(f"the image tower {type(model.image_tower).__name__} does not expose cell features "
                             "(image_tokens); use tiny_cnn or a term that does not need them")
        enc.image_tokens = model.image_tower.forward_tokens(pixels)
    if "neg_text" in requires:
        negatives: list[list[str]] = batch["neg_captions"]
        k = max((len(n) for n in negatives), default=0)
        if k == 0:
            raise ValueError("a term needs hard-negative captions (neg_text) but no record of this batch has any; "
                             "use data with negative captions (synthetic:shapes has them)")
        flat = [n[j] if j < len(n) else "" for n in negatives for j in range(k)]
        mask = torch.tensor([[j < len(n) for j in range(k)] for n in negatives], device=device)
        neg = model.encode_text(model.tokenize(flat).to(device))
        enc.neg_text = neg.view(len(negatives), k, -1)
        enc.neg_text_mask = mask
    return enc
