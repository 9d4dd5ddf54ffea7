"""One optimisation step's forward and backward: plain, or exact accumulation (GradCache).

Plain: encode the batch, gather it across ranks, evaluate the objective, backward.

Accumulation with K micro-batches (Gao et al. 2021, "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup"): (1) encode every micro-batch
without a graph, remembering the random state before each; (2) evaluate the
objective once on the concatenated (and gathered) embeddings, which are leaves
with ``requires_grad``, and backward: this gives the exact gradient of the
full-batch loss with respect to every embedding, the temperature, the bias and
the objective's heads; (3) re-encode each micro-batch with a graph under the
same random state and back-propagate the cached embedding gradients into the
towers. The update equals the one of a single K-times-larger batch — unlike
summing per-micro-batch losses, which changes the loss and over-counts the
temperature's gradient. Towers with batch-statistics layers (BatchNorm) see
micro-batch statistics in the forward passes; the built-in towers use GroupNorm.
"""
from __future__ import annotations

import contextlib
from dataclasses import fields
from typing import Any, Callable, Collection, ContextManager, Sequence

import torch
from torch import Tensor

from ..distributed import BATCH_DIM, NOT_BATCHED, gather_encoded
from ..encoded import Encoded
from ..models.dual_encoder import DualEncoder
from ..objectives import Objective, ObjectiveOutput
from .encode import encode_batch

# Fields computed by the student model (they carry gradient to the towers).
MODEL_FIELDS = ("image", "text", "image_features", "text_features", "image_views", "text_views",
                "image_view_features", "text_view_features", "neg_text", "image_tokens")
LIVE_FIELDS = ("logit_scale", "logit_bias")


def split_batch(batch: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """Split a collated batch into ``parts`` micro-batches (views split along their batch dim).

    Sizes differ by at most one when ``parts`` does not divide the batch (records skipped as bad).
    """
    size = len(batch["captions"])
    if size < parts:
        raise ValueError(f"train.accum_steps={parts} is larger than this batch ({size} records)")
    bounds = [k * size // parts for k in range(parts + 1)]
    out = []
    for k in range(parts):
        rows = slice(bounds[k], bounds[k + 1])
        micro: dict[str, Any] = {}
        for key, value in batch.items():
            if key == "image_views":
                micro[key] = value[:, rows]
            elif key == "text_views":
                micro[key] = [view[rows] for view in value]
            elif key == "skipped":
                micro[key] = value if k == 0 else {}
            else:
                micro[key] = value[rows]
        out.append(micro)
    return out


AutocastFactory = Callable[[], ContextManager]


def _identity(loss: Tensor) -> Tensor:
    return loss


def no_extras(enc: Encoded) -> Encoded:
    """The ``attach`` of a run without engine-kept inputs: the batch as it is."""
    return enc


def forward_backward(model: DualEncoder, objective: Objective, batch: dict[str, Any], requires: Collection[str],
                     teacher: DualEncoder | None = None, reference: DualEncoder | None = None,
                     autocast: AutocastFactory = contextlib.nullcontext,
                     scale: Callable[[Tensor], Tensor] = _identity,
                     attach: Callable[[Encoded], Encoded] = no_extras) -> ObjectiveOutput:
    """Towers under ``autocast``; objective in float32 on the gathered batch; backward of ``scale(loss)``.

    ``attach`` adds engine-kept inputs (cluster ids) to the gathered batch.
    """
    with autocast():
        enc = encode_batch(model, batch, requires, teacher, reference)
    out = objective(attach(gather_encoded(enc.upcast())))
    scale(out.loss).backward()
    return out


def _concat(encodings: Sequence[Encoded]) -> Encoded:
    values: dict[str, Any] = {}
    for f in fields(Encoded):
        items = [getattr(e, f.name) for e in encodings]
        first = items[0]
        if isinstance(first, Tensor) and f.name not in NOT_BATCHED:
            values[f.name] = torch.cat(items, dim=BATCH_DIM.get(f.name, 0))
        else:
            values[f.name] = first
    return Encoded(**values)


def _rng_state() -> tuple[Tensor, list[Tensor] | None]:
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _set_rng_state(state: tuple[Tensor, list[Tensor] | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def grad_cache_backward(model: DualEncoder, objective: Objective, micro_batches: Sequence[dict[str, Any]],
                        requires: Collection[str], teacher: DualEncoder | None = None,
                        reference: DualEncoder | None = None, autocast: AutocastFactory = contextlib.nullcontext,
                        scale: Callable[[Tensor], Tensor] = _identity,
                        attach: Callable[[Encoded], Encoded] = no_extras) -> ObjectiveOutput:
    """Exact large-batch gradients from micro-batches (see the module docstring)."""
    states, cached = [], []
    for micro in micro_batches:
        states.append(_rng_state())
        with torch.no_grad(), autocast():
            cached.append(encode_batch(model, micro, requires, teacher, reference).upcast())
    after = _rng_state()
    full = _concat(cached)
    leaves = {}
    for name in MODEL_FIELDS:
        value = getattr(full, name)
        if value is not None:
            leaves[name] = value.detach().requires_grad_(True)
            setattr(full, name, leaves[name])
    full.logit_scale = model.logit_scale
    full.logit_bias = model.logit_bias
    out = objective(attach(gather_encoded(full)))
    scale(out.loss).backward()

    offset = 0
    for micro, state in zip(micro_batches, states):
        _set_rng_state(state)
        with autocast():
            enc = encode_batch(model, micro, requires)
        rows = len(micro["captions"])
        roots, grads = [], []
        for name, leaf in leaves.items():
            if leaf.grad is None:
                continue
            root = getattr(enc, name)
            if root is None or not root.requires_grad:
                continue
            roots.append(root)
            grads.append(leaf.grad.narrow(BATCH_DIM.get(name, 0), offset, rows).to(root.dtype))
        if roots:
            torch.autograd.backward(roots, grads)
        offset += rows
    _set_rng_state(after)
    return out
