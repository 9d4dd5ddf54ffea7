"""One optimisation step's forward and backward: plain, or exact accumulation (GradCache).

Both go through :meth:`StepContext.encode` and :meth:`StepContext.objective_on`, the one
place where a batch becomes a loss: encode -> gather across ranks -> attach engine-kept
inputs -> objective.

Plain: encode the batch, form the loss, backward.

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
Which fields are cached and replayed, and which are read live from the model,
comes from the field table (``encoded.py``): student fields with gradient.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..data.batch import Batch
from ..distributed import gather_encoded
from ..encoded import FIELDS, Encoded, batched_tensors
from ..models.dual_encoder import DualEncoder
from ..objectives import Objective, ObjectiveOutput
from .encode import encode_batch, live_scalars

AutocastFactory = Callable[[], contextlib.AbstractContextManager]
REPLAYED = tuple(name for name, spec in FIELDS.items() if spec.producer == "student" and spec.grad and spec.batched)


def _identity(loss: Tensor) -> Tensor:
    return loss


def no_extras(enc: Encoded) -> Encoded:
    """The ``attach`` of a run without engine-kept inputs: the batch as it is."""
    return enc


@dataclass
class StepContext:
    """What every forward/backward of a run shares.

    ``autocast`` wraps the towers' forward passes (losses are computed in float32); ``scale``
    maps the loss to what is back-propagated (the fp16 gradient scaler); ``attach`` adds
    engine-kept inputs (cluster ids) to the gathered batch.
    """

    model: DualEncoder
    objective: Objective
    requires: frozenset[str]
    teacher: DualEncoder | None = None
    reference: DualEncoder | None = None
    autocast: AutocastFactory = contextlib.nullcontext
    scale: Callable[[Tensor], Tensor] = _identity
    attach: Callable[[Encoded], Encoded] = no_extras

    def encode(self, batch: Batch, *, student_only: bool = False) -> Encoded:
        """``batch`` through the towers under ``autocast`` (the frozen copies too unless ``student_only``)."""
        with self.autocast():
            if student_only:
                return encode_batch(self.model, batch, self.requires)
            return encode_batch(self.model, batch, self.requires, self.teacher, self.reference)

    def objective_on(self, enc: Encoded, check_finite: bool = True) -> ObjectiveOutput:
        """The loss of a locally encoded batch: gather across ranks, attach, objective (in float32)."""
        return self.objective(self.attach(gather_encoded(enc.upcast())), check_finite=check_finite)


def forward_backward(ctx: StepContext, batch: Batch) -> ObjectiveOutput:
    """Encode, form the loss, backward of ``scale(loss)``."""
    out = ctx.objective_on(ctx.encode(batch))
    ctx.scale(out.loss).backward()
    return out


def _concat(encodings: Sequence[Encoded]) -> Encoded:
    """Micro-batch encodings joined along each field's batch dimension."""
    first = encodings[0]
    # Field names known at run time: the keywords' types cannot be checked statically.
    joined: dict[str, Any] = {
        name: torch.cat([getattr(e, name) for e in encodings], dim=FIELDS[name].batch_dim)
        for name in batched_tensors(first)
    }
    return dataclasses.replace(first, **joined)


def _rng_state() -> tuple[Tensor, list[Tensor] | None]:
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _set_rng_state(state: tuple[Tensor, list[Tensor] | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def grad_cache_backward(ctx: StepContext, micro_batches: Sequence[Batch]) -> ObjectiveOutput:
    """Exact large-batch gradients from micro-batches (see the module docstring)."""
    states, cached = [], []
    for micro in micro_batches:
        states.append(_rng_state())
        with torch.no_grad():
            cached.append(ctx.encode(micro).upcast())
    after = _rng_state()
    full = _concat(cached)
    leaves = {
        name: getattr(full, name).detach().requires_grad_(True) for name in REPLAYED if getattr(full, name) is not None
    }
    full = dataclasses.replace(full, **leaves, **live_scalars(ctx.model))
    out = ctx.objective_on(full)
    ctx.scale(out.loss).backward()

    offset = 0
    for micro, state in zip(micro_batches, states):
        _set_rng_state(state)
        enc = ctx.encode(micro, student_only=True)
        roots, grads = [], []
        for name, leaf in leaves.items():
            root = getattr(enc, name)
            if leaf.grad is None or root is None or not root.requires_grad:
                continue
            roots.append(root)
            grads.append(leaf.grad.narrow(FIELDS[name].batch_dim, offset, len(micro)).to(root.dtype))
        if roots:
            torch.autograd.backward(roots, grads)
        offset += len(micro)
    _set_rng_state(after)
    return out
