"""What prompt learners read of an image, computed once with the frozen image tower.

- ``features``: the normalised joint-space embedding f(x) (B x D), which CoOp scores against the class
  prompts and CoCoOp's meta-network reads;
- ``stats``: GOPro's content and style primitives, the mean and the standard deviation over the image
  tower's output tokens (``forward_tokens``: the built-in CNN's cells; Singha et al. take them from each ViT
  layer), concatenated (B x 2W). A tower without tokens gives its pooled feature and zeros.

The towers are frozen during prompt learning, so these are computed once per image (and per augmented view
for GOPro) instead of at every step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from ..models.dual_encoder import DualEncoder


@dataclass
class PromptInputs:
    features: Tensor  # N x D, unit rows
    stats: Tensor  # N x 2W

    def __getitem__(self, rows: Tensor) -> PromptInputs:
        return PromptInputs(self.features[rows], self.stats[rows])

    def __len__(self) -> int:
        return len(self.features)


@torch.no_grad()
def prompt_inputs(
    model: DualEncoder,
    images: Sequence[Image.Image],
    transform: Callable[[Image.Image], Tensor],
    batch_size: int = 256,
) -> PromptInputs:
    """Features and token statistics of ``images`` (each passed through ``transform`` first)."""
    model.eval()
    token_fn = getattr(model.image_tower, "forward_tokens", None)
    feats, stats = [], []
    for start in range(0, len(images), batch_size):
        pixels = torch.stack([transform(im) for im in images[start : start + batch_size]])
        pooled = model.image_features(pixels)
        feats.append(model.project_image(pooled).float())
        if callable(token_fn):
            tokens = token_fn(pixels)
            stats.append(torch.cat([tokens.mean(dim=1), tokens.std(dim=1)], dim=1).float())
        else:
            stats.append(torch.cat([pooled, torch.zeros_like(pooled)], dim=1).float())
    return PromptInputs(torch.cat(feats), torch.cat(stats))
