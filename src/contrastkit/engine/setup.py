"""What the trainer builds before the first step: data view, frozen copies, precision, speed switches."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from copy import deepcopy
from typing import cast

import torch

from ..config import Config, ConfigError, column_list
from ..data.records import Dataset
from ..data.row_values import ROW_VALUES
from ..data.training_set import TrainingSet, ViewSpec, tag_vocabulary
from ..data.transforms import TextAugment, image_augment
from ..encoded import FIELDS
from ..models.dual_encoder import DualEncoder
from ..models.towers import GradCheckpointing
from ..objectives import Objective


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            import os

            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} was asked for but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def frozen_copy(model: DualEncoder) -> DualEncoder:
    copy = deepcopy(model)
    copy.eval()
    for p in copy.parameters():
        p.requires_grad_(False)
    return copy


@torch.no_grad()
def ema_update(teacher: DualEncoder, student: DualEncoder, momentum: float) -> None:
    """teacher <- m teacher + (1 - m) student, over parameters and floating buffers."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.lerp_(s.detach(), 1 - momentum)
    for t_buf, s_buf in zip(teacher.buffers(), student.buffers()):
        if t_buf.dtype.is_floating_point:
            t_buf.lerp_(s_buf, 1 - momentum)
        else:
            t_buf.copy_(s_buf)


def tag_vocabulary_for(objective: Objective, train_set: Dataset) -> list[str]:
    """The tag order of the targets: a term's own ``vocabulary``, else the tags found in the data.

    A term that states ``num_tags`` must agree with the vocabulary size.
    """
    terms = [(label, term) for label, term in zip(objective.labels, objective.iter_terms()) if "tags" in term.requires]
    own = (getattr(t, "vocabulary", None) for _, t in terms)
    vocabulary = next((list(v) for v in own if v), None)
    vocabulary = vocabulary or tag_vocabulary(train_set)
    for label, term in terms:
        size = getattr(term, "num_tags", len(vocabulary))
        if size != len(vocabulary):
            raise ValueError(
                f"objective term {label!r}: num_tags is {size} but the data has {len(vocabulary)} tags; "
                f"set num_tags: {len(vocabulary)} (or give the term its vocabulary)"
            )
    return vocabulary


def training_set_for(cfg: Config, train_set: Dataset, model: DualEncoder, objective: Objective) -> TrainingSet:
    """The training view of the data: only the per-record work the objective's inputs need (field table)."""
    size = cfg.data.image_size
    required = [FIELDS[name] for name in objective.requires if name in FIELDS]
    settings = {spec.setting for spec in required}
    views = ViewSpec()
    if "data.views" in settings:
        views = ViewSpec(
            cfg.data.views, image_augment(cfg.data.view_image_augment, size), TextAugment(cfg.data.view_text_augment)
        )
    neg_per_image = cfg.data.neg_per_image if "data.neg_per_image" in settings else 0
    categories = column_list(cfg.data.neg_categories) if neg_per_image else []
    if categories:
        found = {c for i in range(min(200, len(train_set))) for c in train_set[i].neg_captions}
        unknown = sorted(set(categories) - found)
        if unknown:
            raise ConfigError(
                f"data.neg_categories: {', '.join(unknown)} not among the data's hard-negative "
                f"categories ({', '.join(sorted(found)) or 'none'})"
            )
    rows = sorted({spec.batch_key for spec in required if spec.producer == "data" and spec.batch_key in ROW_VALUES})
    augment = None if cfg.data.image_augment == "none" else image_augment(cfg.data.image_augment, size)
    vocabulary = tag_vocabulary_for(objective, train_set) if "tag_targets" in rows else None
    return TrainingSet(
        train_set,
        model.image_transform(train=True),
        cfg.train.seed,
        neg_per_image,
        augment,
        views,
        vocabulary,
        rows=rows,
        neg_categories=categories,
    )


def autocast_for(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A context factory for the towers' forward passes (losses are computed in float32)."""
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision: fp16 needs a CUDA device (use bf16 on CPU)")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def apply_speed_switches(model: DualEncoder, cfg: Config) -> None:
    """Gradient checkpointing and torch.compile of the towers, as the config asks."""
    if cfg.train.grad_checkpointing:
        for name, tower in (("image", model.image_tower), ("text", model.text_tower)):
            if not hasattr(tower, "set_grad_checkpointing"):
                raise ConfigError(
                    f"train.grad_checkpointing: the {name} tower ({type(tower).__name__}) does not "
                    "support it; it is for open_clip and hf towers"
                )
            cast(GradCheckpointing, tower).set_grad_checkpointing(True)
    if cfg.train.compile:
        model.image_tower.compile()
        model.text_tower.compile()
