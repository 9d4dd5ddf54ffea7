"""DeGLA: image- and text-grounded contrast over own hard negatives, and EMA self-distillation.

Hu et al. 2025, "Decoupled Global-Local Alignment for Improving Compositional
Understanding" (DeGLA); formulas checked against the authors' release
(``CLIPloss_DeGLA`` in src/open_clip/loss.py).

Notation: x_i, y_i student image / caption of pair i; n_ik (k < K) the student
embeddings of pair i's hard-negative captions (``neg_text``, B x K x D) with
validity mask m_ik (``neg_text_mask``; absent = all valid); a superscript T
marks the EMA teacher (``teacher_image``, ``teacher_text``,
``teacher_neg_text``), which takes no gradient.

``degla_igc`` (image-grounded contrast), weight 0.1 in the paper:
    L_igc = -(1/B) sum_i log softmax(t [x_i.y_i, x_i.n_i1 .. x_i.n_iK])_0     (t = CLIP logit scale)

``degla_tgc`` (text-grounded contrast), weight 0.1:
    L_tgc = -(1/B) sum_i log softmax(s [y_i.y^T_i, y_i.n_i1 .. y_i.n_iK])_0   (s = 10, fixed)
  ``tgc_mask_mode="own"`` (default) uses pair i's own negatives as the paper
  intends. The release builds TGC's mask by tiling (``repeat``) where IGC's is
  interleaved (``repeat_interleave``) over sample-major negatives, so its row i
  sees the flattened negatives at positions k*B + i (k < K), i.e. *other
  samples'* negatives; ``tgc_mask_mode="reference"`` reproduces that.

``ema_distill`` (weight 0.005): the release sums the squared student-teacher
error over the per-GPU batch (32 images and their 32 * (1 + K) texts) and
averages over GPUs. Here it is written with per-row means times those counts,

    L_dist = R [ mean_i ||x_i - x^T_i||^2 + mean_i ( ||y_i - y^T_i||^2 + sum_k m_ik ||n_ik - n^T_ik||^2 ) ]

with R = ``batch_rows`` (default 32, the release's per-GPU batch), so the
weight 0.005 keeps its meaning at any global batch size or world size;
``batch_rows=None`` takes R = B, the literal sum over the batch.

Full recipe: L = negclip + 0.1 degla_igc + 0.1 degla_tgc + 0.005 ema_distill,
teacher = EMA of the student with decay 0.9996 per optimizer step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..encoded import Encoded
from .base import Term, register_term
from .negclip import check_negatives

TGC_MASK_MODES = ("own", "reference")


def _grounded_ce(logits: Tensor, valid: Tensor | None) -> Tensor:
    """CE on column 0 of R x (1 + K) logits; ``valid`` (R x K) masks the K negative columns."""
    if valid is not None:
        keep = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        logits = logits.masked_fill(~keep, float("-inf"))
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)


def degla_igc_loss(
    image: Tensor, text: Tensor, neg_text: Tensor, logit_scale: Tensor, neg_mask: Tensor | None = None
) -> Tensor:
    """Image i against its own positive and its own K negatives, at the CLIP scale."""
    pos = (image * text).sum(dim=-1, keepdim=True)  # B x 1
    neg = torch.einsum("bd,bkd->bk", image, neg_text)  # B x K
    return _grounded_ce(logit_scale * torch.cat([pos, neg], dim=1), neg_mask)


def tgc_negative_index(batch: int, k: int, mode: str, device: torch.device | None = None) -> Tensor:
    """B x K indices into the sample-major flattened negatives (n_ik at i*K + k) used by TGC row i.

    ``own``: i*K + k (pair i's negatives). ``reference``: k*B + i (the release's tiled mask).
    """
    rows = torch.arange(batch, device=device).unsqueeze(1)
    cols = torch.arange(k, device=device).unsqueeze(0)
    if mode == "own":
        return rows * k + cols
    if mode == "reference":
        return cols * batch + rows
    raise ValueError(f"degla_tgc: tgc_mask_mode must be one of {TGC_MASK_MODES}, got {mode!r}")


def degla_tgc_loss(
    text: Tensor,
    teacher_text: Tensor,
    neg_text: Tensor,
    neg_mask: Tensor | None = None,
    scale: float = 10.0,
    mode: str = "own",
) -> Tensor:
    """Student caption i against {teacher caption i, student negatives}, fixed scale, CE on the teacher."""
    b, k, d = neg_text.shape
    index = tgc_negative_index(b, k, mode, text.device)  # B x K
    negs = neg_text.reshape(b * k, d)[index.reshape(-1)].reshape(b, k, d)
    valid = None if neg_mask is None else neg_mask.reshape(b * k)[index.reshape(-1)].reshape(b, k)
    pos = (text * teacher_text.detach()).sum(dim=-1, keepdim=True)
    neg = torch.einsum("bd,bkd->bk", text, negs)
    return _grounded_ce(scale * torch.cat([pos, neg], dim=1), valid)


def ema_distill_loss(
    image: Tensor,
    text: Tensor,
    teacher_image: Tensor,
    teacher_text: Tensor,
    neg_text: Tensor | None = None,
    teacher_neg_text: Tensor | None = None,
    neg_mask: Tensor | None = None,
    batch_rows: int | None = 32,
) -> Tensor:
    """R * [mean_i ||x_i - x^T_i||^2 + mean_i (||y_i - y^T_i||^2 + sum_k m_ik ||n_ik - n^T_ik||^2)]."""
    img_err = (image - teacher_image.detach()).pow(2).sum(dim=-1)  # B
    txt_err = (text - teacher_text.detach()).pow(2).sum(dim=-1)  # B
    if neg_text is not None:
        assert teacher_neg_text is not None
        neg_err = (neg_text - teacher_neg_text.detach()).pow(2).sum(dim=-1)  # B x K
        if neg_mask is not None:
            neg_err = neg_err * neg_mask.to(neg_err.dtype)
        txt_err = txt_err + neg_err.sum(dim=-1)
    rows = image.shape[0] if batch_rows is None else batch_rows
    return rows * (img_err.mean() + txt_err.mean())


@register_term
class DeglaIgcTerm(Term):
    name = "degla_igc"
    description = "DeGLA image-grounded contrast: image vs its positive and its own K negative captions"
    requires: tuple[str, ...] = ("neg_text",)

    def loss(self, enc: Encoded) -> Tensor:
        neg, mask = check_negatives(self.name, enc)
        return degla_igc_loss(enc.image, enc.text, neg, enc.logit_scale, mask)


@register_term
class DeglaTgcTerm(Term):
    name = "degla_tgc"
    description = "DeGLA text-grounded contrast: caption vs its EMA-teacher copy and its own negatives (scale 10)"
    requires: tuple[str, ...] = ("neg_text", "teacher_text")

    def __init__(self, logit_scale: float = 10.0, tgc_mask_mode: str = "own") -> None:
        super().__init__()
        logit_scale = float(logit_scale)
        if not logit_scale > 0.0:
            raise ValueError(f"degla_tgc: logit_scale must be positive (the paper uses 10), got {logit_scale}")
        if tgc_mask_mode not in TGC_MASK_MODES:
            raise ValueError(
                f"degla_tgc: tgc_mask_mode must be one of {TGC_MASK_MODES} "
                f"('own' = the paper, 'reference' = the release's tiled mask), got {tgc_mask_mode!r}"
            )
        self.logit_scale = logit_scale
        self.tgc_mask_mode = tgc_mask_mode

    def loss(self, enc: Encoded) -> Tensor:
        neg, mask = check_negatives(self.name, enc)
        assert enc.teacher_text is not None
        return degla_tgc_loss(enc.text, enc.teacher_text, neg, mask, self.logit_scale, self.tgc_mask_mode)


@register_term
class EmaDistillTerm(Term):
    name = "ema_distill"
    description = "DeGLA self-distillation: summed squared error to the EMA teacher over images and 1+K texts"
    requires: tuple[str, ...] = ("teacher_image", "teacher_text")

    def __init__(self, batch_rows: int | None = 32, include_negatives: bool = True) -> None:
        super().__init__()
        if batch_rows is not None and (
            isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1
        ):
            raise ValueError(
                f"ema_distill: batch_rows must be a positive integer (the release's per-GPU "
                f"batch, 32) or null for the literal sum over the batch, got {batch_rows!r}"
            )
        self.batch_rows = batch_rows
        self.include_negatives = bool(include_negatives)

    def loss(self, enc: Encoded) -> Tensor:
        assert enc.teacher_image is not None and enc.teacher_text is not None
        neg = mask = tneg = None
        if self.include_negatives and enc.neg_text is not None:
            neg, mask = check_negatives(self.name, enc)
            enc.require(self.name, "teacher_neg_text")
            tneg = enc.teacher_neg_text
            assert tneg is not None
            if tneg.shape != neg.shape:
                raise ValueError(
                    f"objective term {self.name!r}: teacher_neg_text must match neg_text "
                    f"{tuple(neg.shape)}, got {tuple(tneg.shape)}"
                )
        return ema_distill_loss(
            enc.image, enc.text, enc.teacher_image, enc.teacher_text, neg, tneg, mask, self.batch_rows
        )
