"""The linear-memory SigLIP loss: each tile's gradient accumulated as the forward pass streams.

A tile's gradient, ``sigmoid(L) - [i = j]``, depends on nothing outside the tile, so when
gradients are wanted the forward pass accumulates ``dX``, ``dY``, ``dt``, ``db`` tile by tile
(3 matmuls per tile, like a dense loss) and saves only those O(B D) results; backward scales
them by the incoming gradient. Under ``torch.no_grad`` only the loss is computed (1 matmul per
tile). The tile machinery is shared with the InfoNCE loss (:mod:`contrastkit.objectives.tiled`,
whose docstring covers memory, exactness and mixed precision).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .tiled import (
    Scratch,
    accumulate,
    as_scalar,
    compute_dtypes,
    no_autocast,
    resolve_tile,
    tile_blocks,
    tile_logits,
    to_compute,
)
from .tiled_fused import fused, sigmoid_tile, sigmoid_tile_loss, uses_fused_tiles


def _eager_sigmoid_tile(
    xi: Tensor, yj: Tensor, bias: Tensor, on_diagonal: bool, with_grad: bool, scratch: Scratch
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(loss sum, gradient tile in the matmul dtype, its sum) of one SigLIP tile, in place in ``scratch``."""
    acc = bias.dtype
    zero = torch.zeros((), dtype=acc, device=xi.device)
    logits = tile_logits(xi, yj, scratch.get(0, xi.shape[0], yj.shape[0], acc), scratch).add_(bias)
    diag = logits.diagonal().clone() if on_diagonal else None  # the positives i = j
    # negatives: -log sigmoid(-L) = softplus(L) = logaddexp(L, 0) (stable, no threshold)
    loss = torch.logaddexp(logits, zero, out=scratch.get(1, xi.shape[0], yj.shape[0], acc))
    if diag is not None:  # positives: -log sigmoid(L) = softplus(-L), computed directly
        loss.diagonal().copy_(torch.logaddexp(-diag, zero))
    loss_sum = loss.sum()
    if not with_grad:
        return loss_sum, None, None
    g = logits.sigmoid_()  # d softplus(L) / dL for the negatives
    if diag is not None:  # d softplus(-L) / dL = -sigmoid(-L) for the positives
        g.diagonal().copy_(torch.sigmoid(-diag).neg_())
    return loss_sum, to_compute(g, xi.dtype, scratch), g.sum()


def _fused_sigmoid_tile(
    xi: Tensor, yj: Tensor, bias: Tensor, on_diagonal: bool, with_grad: bool, scratch: Scratch, flags: Tensor
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """:func:`_eager_sigmoid_tile` as compiled kernels reading the tile in the matmul dtype.

    ``flags`` is the device tensor ``[True, False]`` (made once per loss call, not per tile).
    """
    logits = torch.mm(xi, yj.T, out=scratch.get(0, xi.shape[0], yj.shape[0], xi.dtype))
    positives = flags[0] if on_diagonal else flags[1]
    if not with_grad:
        return fused(sigmoid_tile_loss)(logits, bias, positives), None, None
    return fused(sigmoid_tile)(logits, bias, positives)


def _sigmoid_tiles(
    x: Tensor, y: Tensor, t: Tensor, b: Tensor, tile: int, need_x: bool, need_y: bool, need_t: bool, need_b: bool
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
    """One pass over the logit tiles of the SigLIP loss.

    Returns ``(sum_ij softplus(-z_ij L_ij), dx, dy, dt, db)``, the gradients of the
    *mean over images* (None where not needed). Each tile's gradient is local
    (sigmoid of its own logits, no row or column normaliser), so the gradients
    are accumulated in the same pass: 3 matmuls per tile, no recomputation.
    """
    compute, acc = compute_dtypes(x)
    rows_x, rows_y = x.shape[0], y.shape[0]
    need_gy, need_gx = need_x or need_t, need_y
    any_grad = need_gy or need_gx or need_b
    with no_autocast(x.device), torch.no_grad():
        ta, ba = t.reshape(()).to(acc), b.reshape(()).to(acc)
        xs = (x.to(acc) * ta).to(compute)
        yc = y.to(compute)
        gy = torch.zeros(rows_x, x.shape[1], dtype=acc, device=x.device) if need_gy else None  # G @ Y
        gx = torch.zeros(rows_y, y.shape[1], dtype=acc, device=x.device) if need_gx else None  # G^T @ tX
        loss_parts: list[Tensor] = []
        db_parts: list[Tensor] = []
        side = min(tile, max(rows_x, rows_y))
        scratch = Scratch(side, max(side, x.shape[1]), x.device)
        tile_step = _eager_sigmoid_tile
        if uses_fused_tiles(x.device):
            tile_step = partial(_fused_sigmoid_tile, flags=torch.tensor([True, False], device=x.device))
        for i0, i1 in tile_blocks(rows_x, tile):
            xi = xs[i0:i1]
            for j0, j1 in tile_blocks(rows_y, tile):
                yj = yc[j0:j1]
                loss_sum, gc, g_sum = tile_step(xi, yj, ba, i0 == j0, any_grad, scratch)
                loss_parts.append(loss_sum)
                if gc is None:
                    continue
                if need_b:
                    assert g_sum is not None  # a tile computed with gradients has its gradient sum
                    db_parts.append(g_sum)
                if gy is not None:
                    accumulate(gy[i0:i1], gc, yj, scratch)
                if gx is not None:
                    accumulate(gx[j0:j1], gc.T, xi, scratch)
        total = torch.stack(loss_parts).sum()
        inv = 1.0 / rows_x
        dx = dy = dt = db = None
        if need_b:
            db = (torch.stack(db_parts).sum() * inv).reshape(b.shape).to(b.dtype)
        if gy is not None:
            if need_t:  # dLoss/dt = (1/Bx) sum_ij G_ij x_i.y_j
                dt = ((x.to(acc) * gy).sum() * inv).reshape(t.shape).to(t.dtype)
            if need_x:
                dx = gy.mul_(ta * inv).to(x.dtype)
        if gx is not None:
            dy = gx.mul_(inv).to(y.dtype)
    return total, dx, dy, dt, db


class TiledSigmoid(torch.autograd.Function):
    """SigLIP loss ``-(1/Bx) sum_ij log sigmoid(z_ij (t x_i.y_j + b))`` (z = +1 on i = j, else -1).

    ``apply(x, y, t, b, tile, with_grad)``; x is Bx x D, y is By x D (positives on
    the diagonal i = j < min(Bx, By)). Unlike InfoNCE, a tile's gradient needs
    nothing from other tiles, so when ``with_grad`` the forward pass accumulates
    the gradients as it goes (3 matmuls per tile instead of 4 with a recomputing
    backward) and saves only them (O(B D)); backward scales them by the
    incoming gradient.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        y: Tensor,
        t: Tensor,
        b: Tensor,
        tile: int,
        with_grad: bool,
    ) -> Tensor:
        need = ctx.needs_input_grad[:4] if with_grad else (False,) * 4
        total, dx, dy, dt, db = _sigmoid_tiles(x, y, t, b, tile, *need)
        ctx.save_for_backward(dx, dy, dt, db)
        return total / x.shape[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        grads = tuple(None if g is None else g * grad.to(g.dtype) for g in ctx.saved_tensors)
        return grads + (None, None)


def tiled_siglip_loss(
    image: Tensor, text: Tensor, logit_scale: Tensor | float, logit_bias: Tensor | float, tile_size: int | None = None
) -> Tensor:
    """SigLIP sigmoid loss in O(B) memory; same value and gradients as ``siglip_loss``.

    Sum over texts, mean over images. ``image`` is Bx x D, ``text`` By x D
    (By may differ: extra rows are negatives for every image).
    """
    if image.dim() != 2 or text.dim() != 2 or image.shape[1] != text.shape[1]:
        raise ValueError(
            f"tiled_siglip_loss: image and text must be Bx x D and By x D, got "
            f"{tuple(image.shape)} and {tuple(text.shape)}"
        )
    tile = resolve_tile(tile_size, image.device)
    t = as_scalar(logit_scale, image, "logit_scale")
    b = as_scalar(logit_bias, image, "logit_bias")
    with_grad = torch.is_grad_enabled() and any(v.requires_grad for v in (image, text, t, b))
    return TiledSigmoid.apply(image, text, t, b, tile, with_grad)


__all__ = ["TiledSigmoid", "tiled_siglip_loss"]
