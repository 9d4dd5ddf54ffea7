"""Training and scoring a prompt learner (CoOp, CoCoOp, TOMM-style, GOPro) on frozen image inputs.

The schedule is CoOp's (a cosine decay of the learning rate over the run, batch 32), the optimiser is Adam
where Zhou et al. use SGD (momentum 0.9, lr 0.002, 200 epochs): SGD's step scales with the gradient, and a
gradient w.r.t. a context vector is small when the token embeddings are large (norm ~8 in the built-in
tower against ~0.5 in OpenAI's CLIP). Measured on the testbed base (shapes, 16 shots, 200 steps): the
context's gradient norm was ~0.01 for a context of norm ~16, and SGD at lr 0.02-0.1 moved the training loss
from 0.431 to 0.426; Adam moves it at any embedding scale.

Every step draws ``batch_size`` shots (without replacement inside a step); GOPro also draws two different
augmented views of each drawn shot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .coop import CoCoOp, CoOp
from .gopro import GOPro
from .prompt_inputs import PromptInputs
from .prompt_tokens import PromptedText
from .tomm import TommStyle

METHODS = ("coop", "cocoop", "tomm", "gopro")


@dataclass(frozen=True)
class PromptSettings:
    n_ctx: int = 4
    position: str = "end"
    ctx_init: str | None = "a photo of a"
    class_specific: bool = False  # CoOp only
    steps: int = 200
    lr: float = 0.003
    batch_size: int = 32


def build_learner(
    method: str, text: PromptedText, n_classes: int, stats_dim: int, settings: PromptSettings, seed: int
) -> CoOp:
    """A fresh learner of ``method`` over ``n_classes`` classes."""
    if method == "coop":
        return CoOp(text, n_classes, class_specific=settings.class_specific, ctx_init=settings.ctx_init, seed=seed)
    if method == "cocoop":
        return CoCoOp(text, n_classes, ctx_init=settings.ctx_init, seed=seed)
    if method == "tomm":
        return TommStyle(text, n_classes, ctx_init=settings.ctx_init, seed=seed)
    if method == "gopro":
        return GOPro(text, n_classes, stats_dim, ctx_init=settings.ctx_init, seed=seed)
    raise ValueError(f"--methods: {method!r} is not one of {', '.join(METHODS)}")


def train_prompts(
    learner: CoOp,
    text: PromptedText,
    shots: PromptInputs,
    labels: Tensor,
    classes: Tensor,
    settings: PromptSettings,
    seed: int,
    views: Sequence[PromptInputs] = (),
    progress: bool = False,
) -> list[float]:
    """Fit ``learner`` on the shots (``labels`` are class ids, all in ``classes``); the loss of every step."""
    local = _local_labels(labels, classes)
    if isinstance(learner, GOPro) and len(views) < 2:
        raise ValueError("GOPro needs at least two augmented views of every shot (--views)")
    params = [p for p in learner.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=settings.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, settings.steps))
    generator = torch.Generator().manual_seed(seed)
    learner.train()
    losses = []
    for _ in tqdm(range(settings.steps), desc="prompts", disable=not progress, leave=False):
        rows = torch.randperm(len(labels), generator=generator)[: settings.batch_size]
        pair = None
        if isinstance(learner, GOPro):
            first, second = torch.randperm(len(views), generator=generator)[:2].tolist()
            pair = (views[first][rows], views[second][rows])
        loss = learner.loss(text, shots[rows], local[rows], classes, pair)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    learner.eval()
    return losses


@torch.no_grad()
def prompt_accuracy(
    learner: CoOp, text: PromptedText, inputs: PromptInputs, labels: Tensor, classes: Tensor, batch_size: int = 128
) -> float:
    """Top-1 accuracy over ``classes`` of the images whose label is one of them."""
    local = _local_labels(labels, classes)
    hits = 0
    for start in range(0, len(labels), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(labels)))
        hits += int((learner.logits(text, inputs[rows], classes).argmax(1) == local[rows]).sum())
    return hits / max(1, len(labels))


def _local_labels(labels: Tensor, classes: Tensor) -> Tensor:
    """Each label's position in ``classes``; every label must be one of them."""
    lookup = torch.full((int(max(classes.max(), labels.max())) + 1,), -1, dtype=torch.long)
    lookup[classes] = torch.arange(len(classes))
    local = lookup[labels]
    if (local < 0).any():
        raise ValueError("prompt learning: a label outside the classes it is scored over")
    return local
