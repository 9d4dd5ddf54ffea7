"""Rank helpers and the one gather that makes every objective input global.

The convention (docs/design.md): every rank encodes its local rows, the engine
gathers each tensor the objective reads into the global batch (gradient flowing
back to the local shard), every rank computes the same global loss, and the
parameter gradients are averaged across ranks after backward. With W ranks the
gather's backward sums W identical upstream gradients into the local rows, and
the average divides by W again, so towers, temperature, bias and objective heads
get exactly the gradient of the single-process global batch. Nothing here is a
user-facing switch that could make gradients wrong.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .encoded import FIELDS, Encoded, batched_tensors


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def init_from_environment() -> bool:
    """Join the process group described by torchrun's environment; False when not launched by torchrun."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return is_distributed()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def _sizes(n: int, device: torch.device) -> list[int]:
    """Every rank's local batch size (they differ when bad records were skipped)."""
    local = torch.tensor([n], device=device)
    parts = [torch.zeros_like(local) for _ in range(world_size())]
    dist.all_gather(parts, local)
    return [int(p) for p in parts]


def _all_gather_padded(x: Tensor, dim: int, sizes: list[int]) -> Tensor:
    """all_gather of tensors whose ``dim`` sizes differ: pad to the largest, gather, cut."""
    biggest = max(sizes)
    if x.shape[dim] < biggest:
        pad_shape = list(x.shape)
        pad_shape[dim] = biggest - x.shape[dim]
        x = torch.cat([x, x.new_zeros(pad_shape)], dim=dim)
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x.contiguous())
    return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes)], dim=dim)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums every rank's upstream gradient and keeps this rank's slice."""

    @staticmethod
    def forward(ctx, x: Tensor, dim: int, sizes: list[int]) -> Tensor:
        ctx.dim, ctx.sizes = dim, sizes
        return _all_gather_padded(x, dim, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        offset = sum(ctx.sizes[: rank()])
        return grad.narrow(ctx.dim, offset, ctx.sizes[rank()]), None, None


def gather_with_grad(x: Tensor, dim: int = 0, sizes: list[int] | None = None) -> Tensor:
    """All ranks' ``x`` concatenated in rank order along ``dim``; gradient flows to this rank's part.

    ``sizes`` (every rank's length along ``dim``) is looked up when not given.
    """
    if not is_distributed() or world_size() == 1:
        return x
    sizes = sizes if sizes is not None else _sizes(x.shape[dim], x.device)
    if not x.requires_grad:
        return _all_gather_padded(x, dim, sizes)
    return _GatherWithGrad.apply(x, dim, sizes)


def gather_encoded(enc: Encoded) -> Encoded:
    """Every batched field of ``enc`` made global along its ``batch_dim`` (the field table); scalars stay."""
    if not is_distributed() or world_size() == 1:
        return enc
    sizes = _sizes(enc.batch_size, enc.image.device)
    # Field names known at run time: the keywords' types cannot be checked statically.
    gathered: dict[str, Any] = {
        name: gather_with_grad(value, FIELDS[name].batch_dim, sizes) for name, value in batched_tensors(enc).items()
    }
    offset = sum(sizes[: rank()])
    return dataclasses.replace(enc, **gathered, local_rows=slice(offset, offset + sizes[rank()]))


def average_gradients(params: Iterable[torch.nn.Parameter], bucket_bytes: int = 25 << 20) -> None:
    """Average ``.grad`` over ranks in flat buckets (a no-op on one process)."""
    if not is_distributed() or world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    bucket: list[Tensor] = []
    size = 0
    for g in grads + [None]:  # None flushes the last bucket
        if g is not None:
            bucket.append(g)
            size += g.numel() * g.element_size()
        if bucket and (g is None or size >= bucket_bytes):
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            flat /= world_size()
            offset = 0
            for b in bucket:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()
            bucket, size = [], 0


def broadcast_parameters(modules: Iterable[torch.nn.Module]) -> None:
    """Make rank 0's parameters and buffers everyone's (same start on every rank)."""
    if not is_distributed() or world_size() == 1:
        return
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)
