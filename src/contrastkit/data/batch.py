"""The collated training batch: a typed object that moves to a device and splits into micro-batches."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .problems import DataError
from .training_set import Sample, Skipped


@dataclass
class Batch:
    """B records of one step (this rank's share), ready for the towers.

    Texts stay strings: the model's tokenizer runs in the main process. ``rows`` holds the
    per-row tensors that objective inputs are copied from (``Encoded`` fields whose producer is
    ``data`` name their ``batch_key`` here, e.g. ``tag_targets``, ``labels``); ``events`` per-row
    counts of augmentation events (``synonym_skipped``: EDA synonym replacements skipped for
    lack of a lexicon entry); ``skipped`` the bad records left out, by reason.
    """

    pixels: Tensor  # B x C x H x W
    captions: list[str]
    index: Tensor  # B record indices
    epoch: Tensor  # B: the pass over the data each row belongs to
    neg_captions: list[list[str]] = field(default_factory=list)  # B lists of up to K hard negatives
    image_views: Tensor | None = None  # V x B x C x H x W
    text_views: list[list[str]] | None = None  # V lists of B captions
    anchors: list[str] | None = None  # text pairs: B anchor texts, encoded by the text tower (pixels is B x 0)
    rows: dict[str, Tensor] = field(default_factory=dict)
    events: dict[str, Tensor] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.captions)

    def has_row(self, key: str) -> bool:
        return key in ("index", "epoch") or key in self.rows

    def row(self, key: str) -> Tensor:
        """The per-row tensor ``key``: ``index``, ``epoch`` or one of :attr:`rows`."""
        if key in ("index", "epoch"):
            return getattr(self, key)
        if key not in self.rows:
            raise KeyError(f"the batch has no per-row values {key!r} (it has {', '.join(sorted(self.rows)) or 'none'})")
        return self.rows[key]

    def _map(
        self, tensors: Callable[[Tensor, int], Tensor], lists: Callable[[list[Any]], list[Any]], skipped: dict[str, int]
    ) -> Batch:
        """A batch whose row-aligned parts went through ``tensors(value, batch_dim)`` / ``lists(value)``."""
        return Batch(
            pixels=tensors(self.pixels, 0),
            captions=lists(self.captions),
            index=tensors(self.index, 0),
            epoch=tensors(self.epoch, 0),
            neg_captions=lists(self.neg_captions),
            image_views=None if self.image_views is None else tensors(self.image_views, 1),
            text_views=None if self.text_views is None else [lists(view) for view in self.text_views],
            anchors=None if self.anchors is None else lists(self.anchors),
            rows={k: tensors(v, 0) for k, v in self.rows.items()},
            events={k: tensors(v, 0) for k, v in self.events.items()},
            skipped=skipped,
        )

    def split(self, parts: int) -> list[Batch]:
        """``parts`` micro-batches in row order (views split along their batch dim).

        Sizes differ by at most one when ``parts`` does not divide the batch (records skipped as bad);
        the skipped counts go with the first part.
        """
        size = len(self)
        if size < parts:
            raise ValueError(f"train.accum_steps={parts} is larger than this batch ({size} records)")
        bounds = [k * size // parts for k in range(parts + 1)]
        out = []
        for k in range(parts):
            rows = slice(bounds[k], bounds[k + 1])
            out.append(
                self._map(
                    lambda t, dim: t.narrow(dim, rows.start, rows.stop - rows.start),
                    lambda items: items[rows],
                    self.skipped if k == 0 else {},
                )
            )
        return out

    def pin_memory(self) -> Batch:
        """Page-locked copies of the tensors (the DataLoader calls this when ``pin_memory`` is on)."""
        return self._map(lambda t, dim: t.pin_memory(), lambda items: items, self.skipped)


def collate(samples: Sequence[Sample | Skipped], skipped: Counter[str] | None = None) -> Batch:
    """Stack the good samples into a :class:`Batch`; skipped records are left out and counted.

    ``skipped`` adds counts found before the batch was made (a streamed batch's bad records).
    """
    counts: Counter[str] = Counter(skipped or {})
    good = [s for s in samples if isinstance(s, Sample)]
    counts.update(s.reason for s in samples if isinstance(s, Skipped))
    if not good:
        raise DataError(
            "empty_batch",
            "a batch",
            f"every record of the batch was bad ({dict(counts)}); run `contrastkit data check` on the source",
        )
    batch = Batch(
        pixels=torch.stack([s.pixels for s in good]),
        captions=[s.caption for s in good],
        index=torch.tensor([s.index for s in good], dtype=torch.long),
        epoch=torch.tensor([s.epoch for s in good], dtype=torch.long),
        neg_captions=[s.neg_captions for s in good],
        rows={key: torch.stack([s.rows[key] for s in good]) for key in good[0].rows},
        events={
            name: torch.tensor([s.counts.get(name, 0) for s in good], dtype=torch.long)
            for name in sorted({name for s in good for name in s.counts})
        },
        skipped=dict(counts),
    )
    views = [s.image_views for s in good if s.image_views is not None]
    if views:
        batch.image_views = torch.stack(views, dim=1)
    if good[0].text_views is not None:  # image views, or a text pair's dropout views of its positive
        batch.text_views = [list(view) for view in zip(*[s.text_views or [] for s in good])]
    if good[0].anchor is not None:
        batch.anchors = [s.anchor or "" for s in good]
    return batch
