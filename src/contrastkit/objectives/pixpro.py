"""PixPro: pixel-to-propagation consistency between two crops of an image.

Xie et al. 2021, "Propagate Yourself: Exploring Pixel-Level Consistency for Unsupervised Visual
Representation Learning" (CVPR; code: zdaxie/PixPro). Two crops of one image go through the image
tower to G x G cell features. Per view v, on the student:

    x = proj(cells_v)                                   (per-cell MLP projector: Linear-BN-ReLU-Linear)
    y_i = normalize( sum_j s(x_i, x_j) normalize(g(x_j)) ),   s = max(cos(x_i, x_j), 0)^gamma

(the pixel propagation module: g a linear map, gamma = 2), and on the EMA teacher
x'_j = normalize(proj'(teacher cells)) with proj' an EMA of proj. Cell i of view a and cell j of
view b are a positive pair when their centres, in the source image, are closer than ``threshold``
(0.7) times the larger of the two views' cell diagonals. The loss of the ordered pair (a, b), per
image, is the mean cosine over its positive pairs; over the batch

    L_ab = -2 mean_images [ sum_ij P_ij cos(y^a_i, x'^b_j) / (sum_ij P_ij + 1e-6) ]
    L = mean over unordered view pairs {a, b} of (L_ab + L_ba)

as the release's ``regression_loss`` (an image whose crops do not overlap contributes 0). The crops'
boxes come from the data pipeline (``data.view_image_augment: pixpro_crop``), so the geometry is
exact, flips included (a flipped box has x0 > x1).

Differences from the paper, by design: the tower's EMA is the engine's teacher
(``train.teacher_momentum``, constant; the paper ramps 0.99 -> 1 on a cosine), the projector's EMA
(``momentum``, 0.99) is this term's; the heads are narrower (``hidden_dim`` 512, ``out_dim`` 128 vs
4096 / 256) for the small towers; and it is meant to be composed with ``clip`` (the paper trains
PixPro alone, or with an instance branch).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..encoded import Encoded
from ._heads import ema_update_, freeze, linear, mlp, momentum_in_unit_interval, positive_int, start_as_copy
from .base import Term, register_term


def cell_centres(boxes: Tensor, grid: int) -> tuple[Tensor, Tensor]:
    """Cell centres in the source image (B x G*G x 2, row-major) and the cell diagonal (B) of each view box."""
    steps = (torch.arange(grid, dtype=boxes.dtype, device=boxes.device) + 0.5) / grid
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    xs = boxes[:, 0, None] + steps * width[:, None]  # B x G
    ys = boxes[:, 1, None] + steps * height[:, None]
    centres = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)  # B x G(y) x G(x) x 2
    diagonal = torch.sqrt((width / grid) ** 2 + (height / grid) ** 2)
    return centres.reshape(boxes.shape[0], grid * grid, 2), diagonal


def positive_pairs(box_a: Tensor, box_b: Tensor, grid: int, threshold: float) -> Tensor:
    """B x N x N: cell i of view a and cell j of view b lie closer than ``threshold`` x the larger cell diagonal."""
    centre_a, diag_a = cell_centres(box_a, grid)
    centre_b, diag_b = cell_centres(box_b, grid)
    distance = torch.cdist(centre_a, centre_b) / torch.maximum(diag_a, diag_b)[:, None, None]
    return (distance < threshold).to(box_a.dtype)


def propagate(x: Tensor, value: Tensor, gamma: float) -> Tensor:
    """y_i = normalize(sum_j max(cos(x_i, x_j), 0)^gamma normalize(value_j)); x, value: B x N x C."""
    unit = F.normalize(x, dim=-1)
    similarity = (unit @ unit.transpose(1, 2)).clamp(min=0) ** gamma
    return F.normalize(similarity @ F.normalize(value, dim=-1), dim=-1)


def consistency_loss(y: Tensor, target: Tensor, positives: Tensor) -> Tensor:
    """-2 mean_b [sum_ij P_ij cos(y_i, t_j) / (sum_ij P_ij + 1e-6)]; y and target are unit rows (B x N x C)."""
    cosine = y @ target.transpose(1, 2)
    per_image = (cosine * positives).sum((1, 2)) / (positives.sum((1, 2)) + 1e-6)
    return -2 * per_image.mean()


@register_term
class PixproTerm(Term):
    name = "pixpro"
    description = "PixPro: pixel-propagation consistency between two crops' overlapping cells (EMA teacher targets)"
    requires = ("image_view_tokens", "teacher_image_view_tokens", "view_boxes")

    def __init__(
        self,
        hidden_dim: int = 512,
        out_dim: int = 128,
        gamma: float = 2.0,
        threshold: float = 0.7,
        momentum: float = 0.99,
    ) -> None:
        """Projector ``hidden_dim`` / ``out_dim``, propagation sharpness ``gamma``, positive ``threshold``
        (in cell diagonals) and the EMA ``momentum`` of the target projector."""
        super().__init__()
        hidden_dim, out_dim = (
            positive_int(self.name, "hidden_dim", hidden_dim),
            positive_int(self.name, "out_dim", out_dim),
        )
        if gamma <= 0 or threshold <= 0:
            raise ValueError(f"pixpro: gamma and threshold must be > 0, got {gamma} and {threshold}")
        self.momentum = momentum_in_unit_interval(self.name, "momentum", momentum)
        self.gamma, self.threshold = float(gamma), float(threshold)
        self.projector = mlp(hidden_dim, out_dim, 2)
        self.target_projector = freeze(mlp(hidden_dim, out_dim, 2))
        self.value = linear(out_dim, out_dim)  # g of the pixel propagation module

    def _project(self, head: nn.Module, cells: Tensor) -> Tensor:
        """A per-cell head over V x B x N x F cells (BatchNorm statistics over every cell of every view)."""
        v, b, n, f = cells.shape
        return head(cells.reshape(v * b * n, f)).view(v, b, n, -1)

    def loss(self, enc: Encoded) -> Tensor:
        cells, teacher_cells, boxes = enc.image_view_tokens, enc.teacher_image_view_tokens, enc.view_boxes
        assert cells is not None and teacher_cells is not None and boxes is not None
        if cells.shape[0] < 2:
            raise ValueError(f"pixpro needs at least 2 views per image (data.views: 2), got {cells.shape[0]}")
        grid = math.isqrt(cells.shape[2])
        if grid * grid != cells.shape[2]:
            raise ValueError(f"pixpro: the tower's {cells.shape[2]} cells are not a square grid")
        x = self._project(self.projector, cells)
        start_as_copy(self.target_projector, self.projector, teacher_cells[0].reshape(-1, cells.shape[-1]).detach())
        with torch.no_grad():
            target = F.normalize(self._project(self.target_projector, teacher_cells.detach()), dim=-1)
        y = torch.stack([propagate(x[a], self.value(x[a]), self.gamma) for a in range(x.shape[0])])
        losses = [
            consistency_loss(y[a], target[b], positive_pairs(boxes[:, a], boxes[:, b], grid, self.threshold))
            + consistency_loss(y[b], target[a], positive_pairs(boxes[:, b], boxes[:, a], grid, self.threshold))
            for a, b in itertools.combinations(range(x.shape[0]), 2)
        ]
        return torch.stack(losses).mean()

    @torch.no_grad()
    def on_step_end(self) -> None:
        """xi <- m xi + (1 - m) theta over the target projector; its BatchNorm statistics are copied."""
        ema_update_(self.target_projector, self.projector, self.momentum)
