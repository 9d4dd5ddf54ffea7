"""CLIP / ALIGN symmetric InfoNCE.

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision"; Jia et al. 2021, "Scaling Up Visual and Vision-Language
Representation Learning With Noisy Text Supervision" (ALIGN).

    L_clip = 1/2 [CE(t S, I) + CE(t S^T, I)],   S = X Y^T

with optional label smoothing P = (1 - eps) I + eps / C (C global columns).
ALIGN preset: eps = 0.1, learnable temperature initialised at t = 1, the two
directions summed instead of averaged.

The term computes the loss with the tiled kernel of :mod:`.tiled` (memory
linear in B, exact gradients); batches of at most ``dense_max_rows`` rows (or
one tile) use the dense :func:`clip_loss`, which is faster there and gives the
same result. :func:`clip_loss` stays the reference the tests compare against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypedDict

from torch import Tensor

from ..encoded import Encoded
from .base import Term, register_term
from .functional import info_nce
from .tiled import check_tile_size, default_tile_size, dense_max_rows, tiled_clip_loss


class Preset(TypedDict):
    label_smoothing: float
    reduction: str


PRESETS: dict[str, Preset] = {
    "clip": {"label_smoothing": 0.0, "reduction": "mean"},
    "align": {"label_smoothing": 0.1, "reduction": "sum"},
}


def clip_loss(
    image: Tensor, text: Tensor, logit_scale: Tensor, label_smoothing: float = 0.0, reduction: str = "mean"
) -> Tensor:
    """Symmetric InfoNCE over the global batch (dense logits)."""
    logits = logit_scale * image @ text.t()
    loss_i2t = info_nce(logits, label_smoothing)
    loss_t2i = info_nce(logits.t(), label_smoothing)
    total = loss_i2t + loss_t2i
    return total if reduction == "sum" else total / 2


@register_term
class ClipTerm(Term):
    name = "clip"
    description = "CLIP/ALIGN symmetric InfoNCE over in-batch negatives (optional label smoothing)"
    model_defaults: Mapping[str, float] = {}

    def __init__(
        self,
        label_smoothing: float | None = None,
        reduction: str | None = None,
        preset: str = "clip",
        tile_size: int | None = None,
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"clip: preset must be one of {sorted(PRESETS)}, got {preset!r}")
        base = PRESETS[preset]
        self.preset = preset
        self.label_smoothing = float(base["label_smoothing"] if label_smoothing is None else label_smoothing)
        self.reduction = str(base["reduction"] if reduction is None else reduction)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"clip: label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"clip: reduction must be 'mean' or 'sum', got {self.reduction!r}")
        self.tile_size = check_tile_size(tile_size, "clip")
        if preset == "align":
            self.model_defaults = {"logit_scale": 1.0}

    def loss(self, enc: Encoded) -> Tensor:
        tile = self.tile_size or default_tile_size(enc.image.device)
        if enc.image.shape[0] <= min(tile, dense_max_rows(enc.image.device)):
            return clip_loss(enc.image, enc.text, enc.logit_scale, self.label_smoothing, self.reduction)
        return tiled_clip_loss(
            enc.image, enc.text, enc.logit_scale, self.label_smoothing, self.reduction, tile_size=tile
        )
