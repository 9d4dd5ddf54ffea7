"""The dual encoder: image tower, text tower, projections, temperature, bias."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from .towers import ImageTower, TextTower, TokenFeatures


class DualEncoder(nn.Module):
    """CLIP-style two-tower model.

    Towers return pooled features (B x F); a linear projection maps them to the
    joint space (skipped when the tower is already projected to ``embed_dim``).
    The temperature is stored as log t and clamped to [0, ln t_max] after each
    optimizer step, as CLIP does; a learnable bias exists for sigmoid losses.
    """

    def __init__(
        self,
        image_tower: ImageTower,
        text_tower: TextTower,
        embed_dim: int,
        logit_scale_init: float = 1 / 0.07,
        logit_bias_init: float | None = None,
        logit_scale_max: float = 100.0,
        learn_logit_scale: bool = True,
    ) -> None:
        super().__init__()
        if logit_scale_init <= 0:
            raise ValueError(f"logit_scale_init must be positive, got {logit_scale_init}")
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.embed_dim = embed_dim
        self.image_proj = self._projection(image_tower, embed_dim)
        self.text_proj = self._projection(text_tower, embed_dim)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale_init)), requires_grad=learn_logit_scale)
        self.logit_bias = None if logit_bias_init is None else nn.Parameter(torch.tensor(float(logit_bias_init)))
        self.logit_scale_max = logit_scale_max

    @staticmethod
    def _projection(tower: ImageTower | TextTower, embed_dim: int) -> nn.Module:
        if getattr(tower, "projected", False) and tower.output_dim == embed_dim:
            return nn.Identity()
        return nn.Linear(tower.output_dim, embed_dim, bias=False)

    @property
    def logit_scale(self) -> Tensor:
        return self.log_logit_scale.exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        self.log_logit_scale.clamp_(0.0, math.log(self.logit_scale_max))

    def image_features(self, pixels: Tensor) -> Tensor:
        return self.image_tower(pixels)

    def text_features(self, tokens: Tensor) -> Tensor:
        return self.text_tower(tokens)

    def project_image(self, features: Tensor) -> Tensor:
        return F.normalize(self.image_proj(features), dim=-1)

    def project_text(self, features: Tensor) -> Tensor:
        return F.normalize(self.text_proj(features), dim=-1)

    def encode_image(self, pixels: Tensor) -> Tensor:
        return self.project_image(self.image_features(pixels))

    def encode_text(self, tokens: Tensor) -> Tensor:
        return self.project_text(self.text_features(tokens))

    @property
    def has_cells(self) -> bool:
        """Whether the image tower gives per-cell features (``forward_tokens``)."""
        return callable(getattr(self.image_tower, "forward_tokens", None))

    def encode_cells(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Per-cell features (B x N x F) and their embeddings in the joint space (B x N x D, unit rows).

        A cell's embedding is its feature through the tower's own token projection (``project_tokens``;
        an open_clip ViT's ``proj``) and the model's image projection, as MaskCLIP (Zhou et al. 2022)
        reads dense predictions out of CLIP.
        """
        tower = self.image_tower
        cells = cast(TokenFeatures, tower).forward_tokens(pixels)
        to_joint = getattr(tower, "project_tokens", None)
        return cells, self.project_image(to_joint(cells) if callable(to_joint) else cells)

    def tokenize(self, texts: list[str]) -> Tensor:
        return self.text_tower.tokenize(list(texts))

    def image_transform(self, train: bool) -> Callable[[Image.Image], Tensor]:
        return self.image_tower.image_transform(train)

    @property
    def pad_token_id(self) -> int:
        return int(getattr(getattr(self.text_tower, "tokenizer", self.text_tower), "pad_token_id", 0))
