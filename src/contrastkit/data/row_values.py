"""Per-record values for the objective inputs the data produces (``Encoded`` fields with producer ``data``).

Each entry of :data:`ROW_VALUES` turns one record into one row; the training set computes only
the keys the objective needs, collate stacks them into ``Batch.rows[key]`` and the engine copies
``Batch.rows[spec.batch_key]`` into the Encoded field. A new data-side input is one function here
plus its field declaration in ``encoded.py`` (CONTRIBUTING.md, "Add an Encoded field").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .records import Record


@dataclass(frozen=True)
class RowContext:
    """What a row function may need besides the record: the run's tag order."""

    tag_index: dict[str, int] | None = None


def tag_targets(record: Record, context: RowContext) -> Tensor:
    """T values: 1 for the record's tags, 0 for its negative tags, -1 unknown (HQ-CLIP's tag head)."""
    if context.tag_index is None:
        raise ValueError("tag targets need the run's tag vocabulary")
    target = torch.full((len(context.tag_index),), -1.0)
    for tag in record.neg_tags:
        if tag in context.tag_index:
            target[context.tag_index[tag]] = 0.0
    for tag in record.tags:
        if tag in context.tag_index:
            target[context.tag_index[tag]] = 1.0
    return target


def class_label(record: Record, context: RowContext) -> Tensor:
    """The record's class id, -1 when it has none."""
    return torch.tensor(-1 if record.label is None else int(record.label), dtype=torch.long)


ROW_VALUES: dict[str, Callable[[Record, RowContext], Tensor]] = {
    "tag_targets": tag_targets,
    "labels": class_label,
}
