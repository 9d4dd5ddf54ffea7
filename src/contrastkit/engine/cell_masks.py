"""Which cells of each image the student does not see (masked image modelling, iBOT-style terms).

iBOT (Zhou et al. 2022) masks a random share of an image's patches, the share drawn uniformly from
[0.1, 0.5] per image, and the student sees the image with those patches hidden while the EMA teacher
sees it whole. Here every image is masked (iBOT masks half of them) and masking is in pixel space: a
masked cell's block of pixels is set to 0, the normalised mean, so the same scheme serves a CNN's cells
and a ViT's patches. The mask of a row is drawn from (epoch, record index), so it is the same under
resume, accumulation and any number of ranks.
"""

from __future__ import annotations

import torch
from torch import Tensor

MASK_RATIO = (0.1, 0.5)


def random_cell_masks(index: Tensor, epoch: Tensor, cells: int, ratio: tuple[float, float] = MASK_RATIO) -> Tensor:
    """B x cells bool, True = masked: per row round(r * cells) cells (at least 1), r ~ U(ratio), seeded by the row."""
    rows = []
    for i, e in zip(index.tolist(), epoch.tolist()):
        g = torch.Generator().manual_seed(1_000_003 * int(e) + int(i))
        share = ratio[0] + (ratio[1] - ratio[0]) * float(torch.rand((), generator=g))
        count = max(1, round(share * cells))
        row = torch.zeros(cells, dtype=torch.bool)
        row[torch.randperm(cells, generator=g)[:count]] = True
        rows.append(row)
    return torch.stack(rows)


def mask_pixels(pixels: Tensor, mask: Tensor, grid: int) -> Tensor:
    """``pixels`` (B x C x H x W) with the block of every masked cell (row-major over a grid x grid map) set to 0."""
    b, _, h, w = pixels.shape
    blocks = mask.view(b, 1, grid, grid).to(pixels.dtype)
    keep = 1 - torch.nn.functional.interpolate(blocks, size=(h, w), mode="nearest")
    return pixels * keep
