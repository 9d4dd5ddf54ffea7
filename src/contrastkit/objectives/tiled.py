"""Linear-memory contrastive losses: tiled log-sum-exp, recomputed in backward.

The dense CLIP / SigLIP losses build the B x B logit matrix (and, under
autograd, several more B x B tensors: softmaxes, their gradients). At a global
batch of 64k that is tens of gigabytes. The functions here never hold more than
one ``tile x tile`` block of logits at a time (plus one scratch block).

Symmetric InfoNCE (:class:`TiledInfoNCE`):

* forward streams over tiles of rows and columns, keeping a running max and
  sum of exponentials per row and per column (online log-sum-exp), and saves
  only ``x``, ``y``, ``t`` and those four B-vectors;
* backward recomputes each tile's logits, forms the tile of
  ``dLoss/dlogits = softmax_rows + softmax_cols - 2 P`` and accumulates
  ``dX``, ``dY`` (one matmul each) and ``dt``.
  Cost: 4 matmuls of ``2 B^2 D`` FLOPs (forward, recomputation, dX, dY), against
  3 for a dense loss that keeps its logits (open_clip's ClipLoss computes the two
  directions with separate matmuls: 6).

SigLIP (:class:`TiledSigmoid`): a tile's gradient, ``sigmoid(L) - [i = j]``,
depends on nothing outside the tile, so when gradients are wanted the forward
pass accumulates ``dX``, ``dY``, ``dt``, ``db`` as it streams (3 matmuls per
tile, like a dense loss) and saves only those O(B D) results; backward scales
them by the incoming gradient. Under ``torch.no_grad`` only the loss is
computed (1 matmul per tile).

Memory: O((B + tile) * D + tile^2) for both.

Gradients are exact (no approximation: label smoothing, the diagonal
positives and the temperature / bias are handled in closed form, targets are
subtracted elementwise in each tile as a dense loss does) and the float64
results agree with :func:`contrastkit.objectives.clip.clip_loss` /
:func:`contrastkit.objectives.siglip.siglip_loss` to rounding.

Per-tile elementwise work: on CPU in place, in preallocated scratch blocks; on CUDA as
fused compiled kernels (:mod:`contrastkit.objectives.tiled_fused`) that read each logit
tile once or twice in the matmul dtype — 4x faster in bf16 at B = 64k on an H200.

Mixed precision: the matmuls run in the inputs' dtype (or the autocast dtype
when autocast is on, as a dense loss under autocast would); log-sum-exp,
softplus/sigmoid and the gradient accumulators run in float32 (float64 inputs
stay float64).

Public API::

    tiled_clip_loss(image, text, logit_scale, label_smoothing=0.0, reduction="mean", tile_size=None)
    tiled_siglip_loss(image, text, logit_scale, logit_bias, tile_size=None)   # tiled_sigmoid.py
    default_tile_size(device) -> int
    dense_max_rows(device) -> int   # the terms use the dense formula up to this batch
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .tiled_fused import fused, infonce_fold, infonce_grad, uses_fused_tiles

# Tile edge (rows = columns of one logit block). CPU: measured on a 2-core
# Xeon (AVX-512), D = 512: single-threaded, 1024 and 2048 run the tile GEMMs at
# 80-90% of the machine's peak and the elementwise passes in cache (1024 is ~5%
# faster); with 2 threads 2048 is ~20% faster (each op splits better across the
# threads) and much less hurt when other jobs compete for the cores (4x fewer
# parallel regions). Two float32 2048^2 scratch blocks = 32 MiB. CUDA: larger
# tiles amortise kernel launches (8192^2 float32 = 256 MiB per block); see
# benchmarks/gpu_check.py for the sweep.
DEFAULT_TILE_CPU = 2048
DEFAULT_TILE_CUDA = 8192


# Batches up to this many rows are cheaper with the dense formula (fewer passes,
# 3 matmuls instead of 4, B x B still small): the ClipTerm / SiglipTerm fall back
# to it. Measured on CPU (2 cores): dense is faster up to B ~ 1024, tiled from 2048.
DENSE_MAX_CPU = 1024
DENSE_MAX_CUDA = 4096


def default_tile_size(device: torch.device | str | None = None) -> int:
    """The tile edge used when ``tile_size`` is None, by device type."""
    kind = torch.device(device).type if device is not None else "cpu"
    return DEFAULT_TILE_CUDA if kind == "cuda" else DEFAULT_TILE_CPU


def dense_max_rows(device: torch.device | str | None = None) -> int:
    """Largest batch for which the terms use the dense formula, by device type."""
    kind = torch.device(device).type if device is not None else "cpu"
    return DENSE_MAX_CUDA if kind == "cuda" else DENSE_MAX_CPU


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def compute_dtypes(x: Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(compute dtype for the matmuls, accumulation dtype for everything else)."""
    compute = x.dtype
    kind = x.device.type
    if x.dtype == torch.float32 and kind in ("cuda", "cpu") and torch.is_autocast_enabled(kind):
        compute = torch.get_autocast_dtype(kind)
    acc = torch.promote_types(compute, torch.float32)
    return compute, acc


@contextlib.contextmanager
def no_autocast(device: torch.device) -> Iterator[None]:
    if device.type in ("cuda", "cpu"):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:  # pragma: no cover - other backends
        yield


def tile_blocks(n: int, tile: int) -> list[tuple[int, int]]:
    return [(i, min(i + tile, n)) for i in range(0, n, tile)]


def check_tile_size(tile_size: object, where: str = "tile_size") -> int | None:
    """Validate a ``tile_size`` hyperparameter: a positive integer, or None for the device default."""
    if tile_size is None:
        return None
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"{where}: tile_size must be a positive integer or None (device default), got {tile_size!r}")
    return int(tile_size)


def resolve_tile(tile_size: int | None, device: torch.device) -> int:
    tile = check_tile_size(tile_size)
    return default_tile_size(device) if tile is None else tile


def as_scalar(value: Tensor | float, like: Tensor, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        value = torch.tensor(float(value), device=like.device)
    if value.numel() != 1:
        raise ValueError(f"{name} must be a scalar (one element), got shape {tuple(value.shape)}")
    return value


class Scratch:
    """Tile buffers allocated once per call and reused by every tile.

    A fresh tile-sized tensor per tile was seen to fragment glibc's heap on CPU
    (each freed 16 MiB block, pinned between small long-lived tensors, was not
    reused): resident memory grew by one block per tile, 16 GiB at B = 64k.
    Every tile-sized temporary therefore lives here.
    """

    def __init__(self, rows: int, cols: int, device: torch.device) -> None:
        self.rows, self.cols, self.device = rows, cols, device
        self.flat: dict[tuple[int, torch.dtype], Tensor] = {}

    def get(self, k: int, rows: int, cols: int, dtype: torch.dtype) -> Tensor:
        buf = self.flat.get((k, dtype))
        if buf is None:
            buf = self.flat[(k, dtype)] = torch.empty(self.rows * self.cols, dtype=dtype, device=self.device)
        return buf[: rows * cols].view(rows, cols)


def tile_logits(xi: Tensor, yj: Tensor, out: Tensor, scratch: Scratch) -> Tensor:
    """``xi @ yj.T`` into ``out`` (accumulation dtype), computing in the inputs' dtype."""
    if xi.dtype == out.dtype:
        return torch.mm(xi, yj.T, out=out)
    low = torch.mm(xi, yj.T, out=scratch.get(10, xi.shape[0], yj.shape[0], xi.dtype))
    return out.copy_(low)


def to_compute(g: Tensor, dtype: torch.dtype, scratch: Scratch) -> Tensor:
    """The gradient tile in the matmul dtype (a scratch copy when it differs)."""
    if g.dtype == dtype:
        return g
    return scratch.get(11, g.shape[0], g.shape[1], dtype).copy_(g)


def accumulate(acc: Tensor, g: Tensor, rhs: Tensor, scratch: Scratch) -> None:
    """``acc += g @ rhs``; ``g`` and ``rhs`` in the compute dtype, ``acc`` in the accumulation dtype."""
    if g.dtype == acc.dtype:
        acc.addmm_(g, rhs)
    else:
        acc.add_(torch.mm(g, rhs, out=scratch.get(12, acc.shape[0], acc.shape[1], rhs.dtype)))


def _online_lse_(m: Tensor, s: Tensor, logits: Tensor, work: Tensor, dim: int) -> None:
    """Fold ``logits`` into running (max ``m``, sum ``s`` of exp(. - m)) along ``dim``, in place.

    ``work`` (same shape) receives exp(logits - new max); ``logits`` is kept.
    """
    new_m = torch.maximum(m, logits.amax(dim))
    s.mul_(torch.exp(m - new_m))
    torch.sub(logits, new_m.unsqueeze(dim), out=work)
    s.add_(work.exp_().sum(dim))
    m.copy_(new_m)


# ---------------------------------------------------------------------------------------------
# symmetric InfoNCE
# ---------------------------------------------------------------------------------------------


class TiledInfoNCE(torch.autograd.Function):
    """Symmetric InfoNCE of ``t * x @ y.T`` with label smoothing, without the B x B matrix.

    ``apply(x, y, t, label_smoothing, scale, tile)`` returns the scalar

        scale * (1/B) * sum_i [ r_i + c_i - 2 sum_j P_ij L_ij ]

    with ``L = t x y^T``, ``r``/``c`` the row/column log-sum-exp of ``L``,
    ``P = (1 - eps) I + eps / B``; ``scale`` 1/2 gives the mean of the two
    directions, 1 their sum.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, t: Tensor, eps: float, scale: float, tile: int) -> Tensor:
        n = x.shape[0]
        compute, acc = compute_dtypes(x)
        with no_autocast(x.device), torch.no_grad():
            ta = t.reshape(()).to(acc)
            xs = (x.to(acc) * ta).to(compute)
            yc = y.to(compute)
            m_r = torch.full((n,), float("-inf"), dtype=acc, device=x.device)
            s_r = torch.zeros(n, dtype=acc, device=x.device)
            m_c = torch.full((n,), float("-inf"), dtype=acc, device=x.device)
            s_c = torch.zeros(n, dtype=acc, device=x.device)
            diag = torch.empty(n, dtype=acc, device=x.device)
            blocks = tile_blocks(n, tile)
            scratch = Scratch(min(tile, n), max(min(tile, n), x.shape[1]), x.device)
            fold = fused(infonce_fold) if uses_fused_tiles(x.device) else None
            for i0, i1 in blocks:
                xi = xs[i0:i1]
                for j0, j1 in blocks:
                    if fold is not None:  # one fused kernel set reads the tile in the matmul dtype
                        logits = torch.mm(xi, yc[j0:j1].T, out=scratch.get(0, i1 - i0, j1 - j0, compute))
                        m_r[i0:i1], s_r[i0:i1], m_c[j0:j1], s_c[j0:j1] = fold(
                            logits, m_r[i0:i1], s_r[i0:i1], m_c[j0:j1], s_c[j0:j1]
                        )
                    else:
                        logits = tile_logits(xi, yc[j0:j1], scratch.get(0, i1 - i0, j1 - j0, acc), scratch)
                        work = scratch.get(1, i1 - i0, j1 - j0, acc)
                        _online_lse_(m_r[i0:i1], s_r[i0:i1], logits, work, dim=1)
                        _online_lse_(m_c[j0:j1], s_c[j0:j1], logits, work, dim=0)
                    if i0 == j0:
                        diag[i0:i1] = logits.diagonal()
            log_s_r, log_s_c = s_r.log(), s_c.log()
            # Per-row losses as (max - target) + log(sum): exact when the target is the max.
            per_row = (m_r - diag) + log_s_r
            per_col = (m_c - diag) + log_s_c
            if eps:
                x_acc, y_acc = x.to(acc), y.to(acc)
                row_mean = (x_acc @ y_acc.mean(0)) * ta  # (1/B) sum_j L_ij
                col_mean = (y_acc @ x_acc.mean(0)) * ta  # (1/B) sum_i L_ij
                per_row = per_row + eps * (diag - row_mean)
                per_col = per_col + eps * (diag - col_mean)
            loss = (per_row.sum() + per_col.sum()) * (scale / n)
        # Saved: the inputs and four B-vectors (running max and sum of exp(. - max), per row and
        # per column). Backward rebuilds softmax as exp(L - max) / sum, which is as precise as a
        # dense log_softmax (exp(L - lse) would lose ~ulp(lse) relative accuracy at large t).
        ctx.save_for_backward(x, y, t, m_r, s_r, m_c, s_c)
        ctx.eps, ctx.scale, ctx.tile = eps, scale, tile
        ctx.compute, ctx.acc = compute, acc
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, y, t, m_r, s_r, m_c, s_c = ctx.saved_tensors
        need_x, need_y, need_t = ctx.needs_input_grad[:3]
        if not (need_x or need_y or need_t):
            return None, None, None, None, None, None
        eps, scale, tile, compute, acc = ctx.eps, ctx.scale, ctx.tile, ctx.compute, ctx.acc
        n = x.shape[0]
        need_gy, need_gx = need_x or need_t, need_y
        with no_autocast(x.device), torch.no_grad():
            ta = t.reshape(()).to(acc)
            xs = (x.to(acc) * ta).to(compute)
            yc = y.to(compute)
            inv_r, inv_c = s_r.reciprocal(), s_c.reciprocal()
            # dLoss/dL = coef * G, G = softmax_rows + softmax_cols - 2 P, P = (1 - eps) I + eps / B.
            # The targets are subtracted inside each tile, elementwise, as a dense loss does: the
            # cancellation p_ii - 1 then costs one rounding, not one per accumulated product.
            uniform, diagonal = 2.0 * eps / n, 2.0 * (1.0 - eps)
            gy = torch.zeros(n, x.shape[1], dtype=acc, device=x.device) if need_gy else None  # G @ Y
            gx = torch.zeros(n, y.shape[1], dtype=acc, device=x.device) if need_gx else None  # G^T @ tX
            blocks = tile_blocks(n, tile)
            scratch = Scratch(min(tile, n), max(min(tile, n), x.shape[1]), x.device)
            grad_tile = fused(infonce_grad) if uses_fused_tiles(x.device) else None
            targets = torch.tensor([uniform, diagonal, 0.0], dtype=acc, device=x.device)
            for i0, i1 in blocks:
                xi = xs[i0:i1]
                for j0, j1 in blocks:
                    yj = yc[j0:j1]
                    if grad_tile is not None:
                        logits = torch.mm(xi, yj.T, out=scratch.get(0, i1 - i0, j1 - j0, compute))
                        gc = grad_tile(
                            logits,
                            m_r[i0:i1],
                            inv_r[i0:i1],
                            m_c[j0:j1],
                            inv_c[j0:j1],
                            targets[0],
                            targets[1] if i0 == j0 else targets[2],
                        )
                    else:
                        logits = tile_logits(xi, yj, scratch.get(0, i1 - i0, j1 - j0, acc), scratch)
                        g = torch.sub(logits, m_r[i0:i1, None], out=scratch.get(1, i1 - i0, j1 - j0, acc)).exp_()
                        g.mul_(inv_r[i0:i1, None])
                        g.addcmul_(logits.sub_(m_c[None, j0:j1]).exp_(), inv_c[None, j0:j1])
                        if uniform:
                            g.sub_(uniform)
                        if i0 == j0:
                            g.diagonal().sub_(diagonal)
                        gc = to_compute(g, compute, scratch)
                    if gy is not None:
                        accumulate(gy[i0:i1], gc, yj, scratch)
                    if gx is not None:
                        accumulate(gx[j0:j1], gc.T, xi, scratch)
            coef = grad.to(acc) * (scale / n)
            dx = dy = dt = None
            if gy is not None:
                if need_t:  # dLoss/dt = coef * sum_ij G_ij x_i.y_j
                    dt = (coef * (x.to(acc) * gy).sum()).reshape(t.shape).to(t.dtype)
                if need_x:
                    dx = gy.mul_(coef * ta).to(x.dtype)
            if gx is not None:
                dy = gx.mul_(coef).to(y.dtype)
        return dx, dy, dt, None, None, None


def tiled_clip_loss(
    image: Tensor,
    text: Tensor,
    logit_scale: Tensor | float,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    tile_size: int | None = None,
) -> Tensor:
    """Symmetric InfoNCE (CLIP / ALIGN) in O(B) memory; same value and gradients as ``clip_loss``.

    ``image`` and ``text`` are B x D (the positive of row i is column i),
    ``logit_scale`` the (already exponentiated) scalar t; ``reduction`` "mean"
    averages the two directions, "sum" adds them; label smoothing uses
    P = (1 - eps) I + eps / B.
    """
    if image.dim() != 2 or text.dim() != 2:
        raise ValueError(
            f"tiled_clip_loss: image and text must be B x D, got {tuple(image.shape)} and {tuple(text.shape)}"
        )
    if image.shape != text.shape:
        raise ValueError(
            f"tiled_clip_loss: image and text must have the same shape (B x D), got "
            f"{tuple(image.shape)} and {tuple(text.shape)}"
        )
    if reduction not in ("mean", "sum"):
        raise ValueError(f"tiled_clip_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"tiled_clip_loss: label_smoothing must be in [0, 1), got {label_smoothing}")
    tile = resolve_tile(tile_size, image.device)
    t = as_scalar(logit_scale, image, "logit_scale")
    scale = 0.5 if reduction == "mean" else 1.0
    return TiledInfoNCE.apply(image, text, t, float(label_smoothing), scale, tile)


__all__ = [
    "DEFAULT_TILE_CPU",
    "DEFAULT_TILE_CUDA",
    "DENSE_MAX_CPU",
    "DENSE_MAX_CUDA",
    "TiledInfoNCE",
    "check_tile_size",
    "default_tile_size",
    "dense_max_rows",
    "tiled_clip_loss",
]
