"""Contrastive cross-entropy over an arbitrary score matrix (docs/methods.md E).

For the contrastive parts of generative papers whose pairwise scores are not
embedding dot products: SoftREPA (Lee et al. 2025, "Aligning Text to Image in
Diffusion Models is Easier Than You Think": l_ij = 4 exp(-e_ij / 0.07) from
denoising errors, image->prompt only), CG-VLM, VladVA. The scores arrive in
``enc.extras["scores"]``: an R x C matrix (C >= R) whose row i is image i and whose
column i is its own prompt (extra columns are negatives):

    L = CE(a S, P),   P = (1 - eps) I + eps / C     (image -> prompt)

and with ``symmetric=True`` (square S only) L = 1/2 [CE(a S, P) + CE(a S^T, P)].
With S = t X Y^T the image->prompt direction is exactly the image->text half
of ``clip``. The term owns no parameters; the scores carry the gradient.
"""

from __future__ import annotations

from torch import Tensor

from ..encoded import Encoded
from .base import Term, register_term
from .functional import info_nce

SCORES_KEY = "scores"


def score_contrastive_loss(
    scores: Tensor, scale: float = 1.0, label_smoothing: float = 0.0, symmetric: bool = False
) -> Tensor:
    """CE of each row of ``scale * scores`` against its diagonal column (and of each column if symmetric)."""
    logits = scale * scores
    loss = info_nce(logits, label_smoothing)
    if symmetric:
        loss = (loss + info_nce(logits.t(), label_smoothing)) / 2
    return loss


@register_term
class ScoreContrastiveTerm(Term):
    name = "score_contrastive"
    description = "CE over any R x C score matrix in extras['scores'] (row i's positive in column i; image->prompt)"
    requires: tuple[str, ...] = (SCORES_KEY,)  # an extras key: Encoded.require looks there too

    def __init__(self, scale: float = 1.0, label_smoothing: float = 0.0, symmetric: bool = False) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"score_contrastive: scale must be > 0, got {scale}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"score_contrastive: label_smoothing must be in [0, 1), got {label_smoothing}")
        if not isinstance(symmetric, bool):
            raise ValueError(f"score_contrastive: symmetric must be true or false, got {symmetric!r}")
        self.scale, self.label_smoothing, self.symmetric = float(scale), float(label_smoothing), symmetric

    def loss(self, enc: Encoded) -> Tensor:
        scores = enc.extras[SCORES_KEY]
        if not isinstance(scores, Tensor) or scores.ndim != 2:
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(
                f"objective term {self.name!r}: extras['{SCORES_KEY}'] must be an R x C tensor of scores, got {shape}"
            )
        rows, cols = scores.shape
        if rows < 1 or cols < rows:
            raise ValueError(
                f"objective term {self.name!r}: extras['{SCORES_KEY}'] must have at least as many "
                f"columns as rows (row i's positive is column i), got {rows} x {cols}"
            )
        if self.symmetric and rows != cols:
            raise ValueError(
                f"objective term {self.name!r}: symmetric=true needs a square score matrix, got {rows} x {cols}"
            )
        if not scores.is_floating_point():
            raise ValueError(
                f"objective term {self.name!r}: extras['{SCORES_KEY}'] must be floating point, got {scores.dtype}"
            )
        return score_contrastive_loss(scores, self.scale, self.label_smoothing, self.symmetric)
