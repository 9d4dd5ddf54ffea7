"""Embed images and texts with a trained DualEncoder (the evaluation's view of a model)."""
from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
from torch import Tensor

from .dual_encoder import DualEncoder


class ModelEmbedder:
    """``embed_images`` / ``embed_texts`` -> L2-normalised float32 CPU tensors, in batches."""

    def __init__(self, model: DualEncoder, batch_size: int = 256) -> None:
        self.model = model
        self.batch_size = batch_size
        self.transform = model.image_transform(train=False)
        self.device = model.log_logit_scale.device

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image.Image]) -> Tensor:
        was_training = self.model.training
        self.model.eval()
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = torch.stack([self.transform(img) for img in images[start:start + self.batch_size]])
            out.append(self.model.encode_image(pixels.to(self.device)).float().cpu())
        self.model.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.model.embed_dim)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        was_training = self.model.training
        self.model.eval()
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.model.tokenize(list(texts[start:start + self.batch_size]))
            out.append(self.model.encode_text(tokens.to(self.device)).float().cpu())
        self.model.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.model.embed_dim)
