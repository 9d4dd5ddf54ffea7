"""Per-tile elementwise work of the tiled losses as pure functions, compiled into fused kernels on CUDA.

The tiled losses (:mod:`contrastkit.objectives.tiled`) spend their matmuls at the GEMM rate; what
else a tile costs is elementwise passes over its ``tile x tile`` logits. The eager CPU path does those
in place in preallocated scratch blocks, about ten passes per tile. On a GPU that is memory traffic:
an 8192^2 float32 block is 256 MiB, and at B = 64k in bfloat16 those passes made the tiled InfoNCE
8.5x its matmul floor (benchmarks/RESULTS.md, GPU check of session 1). Here each tile's work is one
function that reads the logits once or twice, in the matmul's dtype, and writes only what is needed
next; ``torch.compile`` turns each into a few fused kernels (compiled on first use: seconds, once per
process, tile shape and dtype).

* :func:`infonce_fold` — fold a tile into the running row and column (max, sum of exp(L - max)):
  ``m' = max(m, max_tile L)``, ``s' = s exp(m - m') + sum_tile exp(L - m')``, per row and per column.
* :func:`infonce_grad` — the tile of ``G = softmax_rows + softmax_cols - 2 P`` (``P = (1 - eps) I +
  eps / B``): ``exp(L - m_r) / s_r + exp(L - m_c) / s_c - 2 eps / B - [i = j] 2 (1 - eps)``, in the
  matmul dtype (the targets are subtracted in the accumulation dtype, before rounding).
* :func:`sigmoid_tile` — SigLIP's tile: loss sum ``sum softplus(-z L)``, gradient tile
  ``sigmoid(L)`` off the diagonal and ``-sigmoid(-L)`` on it (``L`` includes the bias), and its sum.

They compute what the eager code computes, operation for operation (tested against it and against
the dense losses; only the order of summation inside a reduction may differ). The accumulation
dtype (float32, or float64 for float64 inputs) is the dtype of the running statistics passed in.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# Devices whose tiles go through these functions (compiled with COMPILE_BACKEND); others use the
# eager in-place path in tiled.py.
FUSED_DEVICES = frozenset({"cuda"})
COMPILE_BACKEND = "inductor"


def _diagonal_mask(rows: int, cols: int, device: torch.device) -> Tensor:
    return torch.arange(rows, device=device)[:, None] == torch.arange(cols, device=device)[None, :]


def infonce_fold(
    logits: Tensor, m_r: Tensor, s_r: Tensor, m_c: Tensor, s_c: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Running (max, sum of exp(. - max)) per row and per column, with one more tile folded in."""
    values = logits.to(m_r.dtype)
    new_r = torch.maximum(m_r, values.amax(1))
    s_r = s_r * torch.exp(m_r - new_r) + torch.exp(values - new_r[:, None]).sum(1)
    new_c = torch.maximum(m_c, values.amax(0))
    s_c = s_c * torch.exp(m_c - new_c) + torch.exp(values - new_c[None, :]).sum(0)
    return new_r, s_r, new_c, s_c


def infonce_grad(
    logits: Tensor, m_r: Tensor, inv_r: Tensor, m_c: Tensor, inv_c: Tensor, uniform: Tensor, diagonal: Tensor
) -> Tensor:
    """The tile of G (module docstring) in the logits' dtype; ``diagonal`` is 0 off the diagonal tiles."""
    values = logits.to(m_r.dtype)
    g = torch.exp(values - m_r[:, None]) * inv_r[:, None] + torch.exp(values - m_c[None, :]) * inv_c[None, :]
    g = g - uniform
    rows, cols = g.shape
    g = g - torch.where(_diagonal_mask(rows, cols, g.device), diagonal, torch.zeros_like(diagonal))
    return g.to(logits.dtype)


def sigmoid_tile(logits: Tensor, bias: Tensor, positives: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(loss sum, gradient tile in the logits' dtype, gradient sum) of one SigLIP tile.

    ``bias`` is in the accumulation dtype; ``positives`` (a boolean scalar) says whether the tile's
    diagonal holds the positive pairs (a tile on the global diagonal).
    """
    values, positive = _sigmoid_inputs(logits, bias, positives)
    loss = torch.where(
        positive, torch.logaddexp(-values, torch.zeros_like(values)), torch.logaddexp(values, torch.zeros_like(values))
    )
    g = torch.where(positive, -torch.sigmoid(-values), torch.sigmoid(values))
    return loss.sum(), g.to(logits.dtype), g.sum()


def sigmoid_tile_loss(logits: Tensor, bias: Tensor, positives: Tensor) -> Tensor:
    """The loss sum of :func:`sigmoid_tile` alone (no gradient wanted: one read of the tile)."""
    values, positive = _sigmoid_inputs(logits, bias, positives)
    return torch.where(
        positive, torch.logaddexp(-values, torch.zeros_like(values)), torch.logaddexp(values, torch.zeros_like(values))
    ).sum()


def _sigmoid_inputs(logits: Tensor, bias: Tensor, positives: Tensor) -> tuple[Tensor, Tensor]:
    values = logits.to(bias.dtype) + bias
    rows, cols = values.shape
    return values, _diagonal_mask(rows, cols, values.device) & positives


_compiled: dict[str, Callable] = {}
# Kernels are specialised to each tile shape and dtype (a run sees one full tile shape and at most three
# partial ones per dtype). Specialised kernels were measured 1.5-2.5x faster than dynamo's symbolic-size
# ones on an H200 (B = 64k, bf16), so each function may hold this many variants instead of dynamo's 8.
RECOMPILE_LIMIT = 64


def fused(fn: Callable) -> Callable:
    """``fn`` compiled (fullgraph, specialised to each tile shape and dtype), cached per function."""
    compiled = _compiled.get(fn.__name__)
    if compiled is None:
        kernels = torch.compile(fn, fullgraph=True, dynamic=False, backend=COMPILE_BACKEND)

        def compiled(*args: Tensor) -> Any:
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                return kernels(*args)

        _compiled[fn.__name__] = compiled
    return compiled


def _kernels_compile_on(device: torch.device) -> bool:
    """Whether inductor can generate kernels for ``device`` (CUDA needs Triton and a GPU it supports)."""
    if device.type != "cuda":
        return True
    try:
        from torch.utils._triton import has_triton
    except ImportError:  # pragma: no cover - torch without the helper
        return False
    return bool(has_triton())


_warned: set[str] = set()


def uses_fused_tiles(device: torch.device) -> bool:
    """True where the tiles go through the compiled functions; False (eager tiles, warned once) where
    they cannot be compiled, e.g. CUDA without Triton or on a GPU Triton does not support."""
    if device.type not in FUSED_DEVICES:
        return False
    if COMPILE_BACKEND == "inductor" and not _kernels_compile_on(device):
        if device.type not in _warned:
            _warned.add(device.type)
            warnings.warn(
                f"contrastkit tiled losses: torch.compile cannot build kernels for {device.type} here "
                "(no working Triton for this GPU); the loss tiles run eagerly: same results, slower "
                "in bfloat16. Install triton (it ships with CUDA builds of torch) to fuse them.",
                stacklevel=3,
            )
        return False
    return True
