"""iBOT's masked patch self-distillation (and TIPSv2's iBOT++ variant), composable with ``clip``.

Zhou et al. 2022, "iBOT: Image BERT Pre-Training with Online Tokenizer" (ICLR; code:
bytedance/ibot), the patch-level objective TIPS / TIPSv2 add to image-text training. The student sees
the image with some cells hidden (``cell_mask``, engine/cell_masks.py) and the EMA teacher sees it
whole. One head h (MLP -> L2-normalised bottleneck -> K prototypes with unit rows, DINO's
weight-normalised last layer) maps a cell to K logits; the teacher uses an EMA copy h' of it:

    P_s(i) = softmax( h(s_i) / tau_s )                 tau_s = 0.1
    P_t(i) = softmax( (h'(t_i) - c) / tau_t )          tau_t = 0.04, c = centre of the teacher's logits
    L = mean_images [ - sum_i m_i P_t(i)^T log P_s(i) / sum_i m_i ]

with m_i = 1 on the masked cells (iBOT); ``masked_only: false`` sets m_i = 1 on every cell, which is
how TIPSv2's iBOT++ changes the loss (the visible cells are distilled too). The centre follows the
teacher's mean logit, c <- 0.9 c + 0.1 mean_{images, cells} h'(t_i), and the head's EMA
h' <- m h' + (1 - m) h (``momentum``); both move after the optimizer step (``on_step_end``), from the
last batch the loss saw, so accumulation and replays see one centre per step.

Differences from the paper, by design: pixel-space masking of every image (iBOT masks half the images,
with a learnable mask token in a ViT); a fixed teacher temperature (iBOT warms it 0.04 -> 0.07); K =
1024 prototypes and a 2-layer head (iBOT: 8192, 3 layers) for the small towers; the tower's EMA is the
engine's teacher (``train.teacher_momentum``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoded import Encoded
from ._heads import ema_update_, freeze, linear, momentum_in_unit_interval, positive_int, start_as_copy
from .base import Term, register_term


def distillation_loss(student_logits: Tensor, teacher_probs: Tensor, weights: Tensor) -> Tensor:
    """mean_b [ -sum_i w_bi P_t(bi)^T log P_s(bi) / sum_i w_bi ] (B x N x K logits and probabilities, B x N weights)."""
    cross = -(teacher_probs * F.log_softmax(student_logits, dim=-1)).sum(-1)
    return ((cross * weights).sum(1) / weights.sum(1).clamp(min=1.0)).mean()


class PrototypeHead(nn.Module):
    """MLP (GELU, no BatchNorm, as DINO's head) -> L2-normalised bottleneck -> cosine with K unit prototypes."""

    def __init__(self, hidden_dim: int, bottleneck_dim: int, prototypes: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(linear(None, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        self.prototypes = nn.Parameter(torch.randn(prototypes, bottleneck_dim) * 0.02)

    def forward(self, cells: Tensor) -> Tensor:
        b, n, f = cells.shape
        z = F.normalize(self.mlp(cells.reshape(b * n, f)), dim=-1)
        return (z @ F.normalize(self.prototypes, dim=-1).t()).view(b, n, -1)


@register_term
class IbotPatchTerm(Term):
    name = "ibot_patch"
    description = "iBOT masked-patch self-distillation against the EMA teacher (iBOT++ with masked_only: false)"
    requires = ("masked_image_tokens", "cell_mask", "teacher_image_tokens")

    def __init__(
        self,
        hidden_dim: int = 512,
        bottleneck_dim: int = 128,
        prototypes: int = 1024,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.04,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        masked_only: bool = True,
    ) -> None:
        super().__init__()
        sizes = {"hidden_dim": hidden_dim, "bottleneck_dim": bottleneck_dim, "prototypes": prototypes}
        hidden_dim, bottleneck_dim, prototypes = (positive_int(self.name, k, v) for k, v in sizes.items())
        if student_temperature <= 0 or teacher_temperature <= 0:
            raise ValueError("ibot_patch: the temperatures must be > 0")
        self.center_momentum = momentum_in_unit_interval(self.name, "center_momentum", center_momentum)
        self.momentum = momentum_in_unit_interval(self.name, "momentum", momentum)
        if not isinstance(masked_only, bool):
            raise ValueError(f"ibot_patch: masked_only must be true or false, got {masked_only!r}")
        self.tau_s, self.tau_t = float(student_temperature), float(teacher_temperature)
        self.masked_only = masked_only
        self.head = PrototypeHead(hidden_dim, bottleneck_dim, prototypes)
        self.target_head = freeze(PrototypeHead(hidden_dim, bottleneck_dim, prototypes))
        self.center: Tensor
        self.register_buffer("center", torch.zeros(prototypes))
        self._batch_center: Tensor | None = None

    def teacher_probs(self, teacher_cells: Tensor) -> Tensor:
        """P_t = softmax((h'(t) - c) / tau_t), without gradient; remembers the batch's mean logit for the centre."""
        start_as_copy(self.target_head, self.head, teacher_cells[:1, :1].detach())
        with torch.no_grad():
            logits = self.target_head(teacher_cells.detach())
            self._batch_center = logits.mean(dim=(0, 1))
            return F.softmax((logits - self.center) / self.tau_t, dim=-1)

    def loss(self, enc: Encoded) -> Tensor:
        student, mask, teacher = enc.masked_image_tokens, enc.cell_mask, enc.teacher_image_tokens
        assert student is not None and mask is not None and teacher is not None
        weights = mask.to(student.dtype) if self.masked_only else torch.ones_like(mask, dtype=student.dtype)
        return distillation_loss(self.head(student) / self.tau_s, self.teacher_probs(teacher), weights)

    @torch.no_grad()
    def on_step_end(self) -> None:
        """The centre moves to the last batch's teacher mean; the teacher head follows the head by EMA."""
        if self._batch_center is not None:
            self.center.mul_(self.center_momentum).add_(self._batch_center, alpha=1 - self.center_momentum)
            self._batch_center = None
        ema_update_(self.target_head, self.head, self.momentum)
