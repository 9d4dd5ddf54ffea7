"""What the :class:`~contrastkit.models.dual_encoder.DualEncoder` needs from its towers.

An image tower maps pixels (B x 3 x H x W) to pooled features (B x ``output_dim``) and
names its preprocessing; a text tower maps token ids (B x L) to pooled features and
tokenizes captions. ``projected`` (a class attribute, False when absent) says the
features are already in the joint space when ``output_dim`` equals ``embed_dim``.

Some towers offer more; those extras are looked up where they are used (``hasattr`` /
the field table's ``model_attr``), so the base classes only declare them as protocols:
:class:`TokenFeatures` (``forward_tokens``, per-cell / per-token features) and
:class:`GradCheckpointing` (``set_grad_checkpointing``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from PIL import Image
from torch import Tensor, nn


class ImageTower(nn.Module):
    """Base of the image towers: ``tower(pixels) -> B x output_dim``."""

    output_dim: int
    projected: bool

    def image_transform(self, train: bool) -> Callable[[Image.Image], Tensor]:
        """One PIL image -> C x H x W tensor (with training augmentation when ``train``)."""
        raise NotImplementedError


class TextTower(nn.Module):
    """Base of the text towers: ``tower(tokens) -> B x output_dim``."""

    output_dim: int
    projected: bool

    def tokenize(self, texts: list[str]) -> Tensor:
        """Captions -> B x L token ids."""
        raise NotImplementedError


class TokenFeatures(Protocol):
    """A tower that also returns its features before pooling (B x N x F)."""

    def forward_tokens(self, inputs: Tensor, /) -> Tensor: ...


class GradCheckpointing(Protocol):
    """A tower that can recompute activations in the backward pass instead of keeping them."""

    def set_grad_checkpointing(self, enable: bool = True) -> None: ...


def truncated_captions(tower: nn.Module) -> int | None:
    """How many captions the tower's tokenizer has cut to fit its context so far; None when it does not count."""
    return getattr(getattr(tower, "tokenizer", None), "truncated", None)


class NoImageTower(ImageTower):
    """The image side of a text model (``model.image_tower: none``): text pairs encode both sides with the
    text tower, so nothing may call this one."""

    projected = True

    def __init__(self, output_dim: int) -> None:
        super().__init__()
        self.output_dim = output_dim

    def forward(self, pixels: Tensor) -> Tensor:
        raise TypeError("this model has no image tower (model.image_tower: none): it embeds texts only")

    def image_transform(self, train: bool) -> Callable[[Image.Image], Tensor]:
        def refuse(image: Image.Image) -> Tensor:
            raise TypeError("this model has no image tower (model.image_tower: none): it takes no images")

        return refuse
