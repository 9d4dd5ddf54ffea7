"""SigLIP pairwise sigmoid loss.

Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training".

    logits_ij = t x_i.y_j + b,   z_ij = +1 if i = j else -1
    L = -(1/B) sum_i sum_j log sigmoid(z_ij logits_ij)

Learnable t and b, initialised t = 10, b = -10 (so the B^2 - B negatives do
not swamp early training).

The term computes the loss with the tiled kernel of :mod:`.tiled` (memory
linear in B, exact gradients); batches of at most ``dense_max_rows`` rows (or
one tile) use the dense :func:`siglip_loss`, the reference the tests compare
against. Same sign convention as open_clip's ``SigLipLoss``: z = +1 on the
diagonal, -1 elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ..encoded import Encoded
from .base import Term, register_term
from .tiled import check_tile_size, default_tile_size, dense_max_rows
from .tiled_sigmoid import tiled_siglip_loss


def siglip_loss(image: Tensor, text: Tensor, logit_scale: Tensor, logit_bias: Tensor) -> Tensor:
    """Dense sigmoid loss: sum over texts, mean over images."""
    logits = logit_scale * image @ text.t() + logit_bias
    signs = 2 * torch.eye(logits.shape[0], logits.shape[1], device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / image.shape[0]


@register_term
class SiglipTerm(Term):
    name = "siglip"
    description = "SigLIP pairwise sigmoid loss with learnable scale and bias (init t=10, b=-10)"
    requires: tuple[str, ...] = ("logit_bias",)
    model_defaults: Mapping[str, float] = {"logit_scale": 10.0, "logit_bias": -10.0}

    def __init__(self, tile_size: int | None = None) -> None:
        super().__init__()
        self.tile_size = check_tile_size(tile_size, "siglip")

    def loss(self, enc: Encoded) -> Tensor:
        assert enc.logit_bias is not None
        tile = self.tile_size or default_tile_size(enc.image.device)
        if max(enc.image.shape[0], enc.text.shape[0]) <= min(tile, dense_max_rows(enc.image.device)):
            return siglip_loss(enc.image, enc.text, enc.logit_scale, enc.logit_bias)
        return tiled_siglip_loss(enc.image, enc.text, enc.logit_scale, enc.logit_bias, tile_size=tile)
