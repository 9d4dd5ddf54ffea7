"""The training view of a source: one record -> one :class:`Sample`, every random choice seeded.

Each choice a record's sample involves (which caption, which rewrite, which hard negatives, the
augmentation of the image and its extra views) is seeded by (seed, epoch, index), so batch ``s`` of
a run depends only on (seed, s) in any number of workers. Only the per-record work the objective
needs is done: hard negatives when ``neg_per_image`` > 0, views when ``views.count`` > 0, and the
per-row values named in ``rows`` (:mod:`contrastkit.data.row_values`).

A bad record raises its :class:`~contrastkit.data.problems.DataError` (``on_error: raise``) or
becomes a :class:`Skipped` (``skip``) that collate counts by reason.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from PIL import Image
from torch import Tensor

from .problems import DataError
from .records import Dataset, Record
from .row_values import ROW_VALUES, RowContext
from .transforms import BoxedCrop, TextAugment, boxed_views, load_lexicon, seeded, to_tensor_views

EMPTY_PIXELS = torch.zeros(0)  # a text pair's pixels


@dataclass
class Sample:
    pixels: Tensor
    caption: str
    neg_captions: list[str]
    index: int
    image_views: Tensor | None = None  # V x C x H x W
    text_views: list[str] | None = None  # V captions
    rows: dict[str, Tensor] = field(default_factory=dict)  # per-row objective inputs (row_values)
    counts: dict[str, int] = field(default_factory=dict)  # augmentation events (e.g. synonym_skipped)
    epoch: int = 0  # the pass over the data this sample belongs to
    anchor: str | None = None  # a text pair's first text (the record has no image; pixels is empty)


@dataclass
class Skipped:
    """A bad record left out of its batch (``data.on_error: skip``)."""

    reason: str
    where: str


@dataclass
class ViewSpec:
    """Extra augmented views per record (CL2L-style local views)."""

    count: int = 0
    image_augment: Callable[[Image.Image], Image.Image] | None = None
    text_augment: TextAugment | None = None


class TrainingSet(torch.utils.data.Dataset):
    """Applies the image transform and the seeded per-record choices (caption, negatives, views).

    ``rows``: keys of :data:`~contrastkit.data.row_values.ROW_VALUES` to compute per record;
    ``neg_categories``: the hard-negative categories drawn from (empty: all);
    ``tag_vocabulary`` is the order of the ``tag_targets`` row.

    ``on_error``, ``rewrite_sampling`` and ``lexicon`` default to the source's ``data_options`` (set by
    :func:`~contrastkit.data.sources.open_source` from the DataConfig); a text augmentation without a
    lexicon of its own gets ``data.synonyms``.
    """

    def __init__(
        self,
        dataset: Dataset,
        transform: Callable[[Image.Image], Tensor],
        seed: int,
        neg_per_image: int = 0,
        image_augment: Callable[[Image.Image], Image.Image] | None = None,
        views: ViewSpec | None = None,
        tag_vocabulary: Sequence[str] | None = None,
        *,
        rows: Sequence[str] = (),
        neg_categories: Sequence[str] = (),
        on_error: str | None = None,
        rewrite_sampling: bool | None = None,
        lexicon: dict[str, list[str]] | None = None,
    ) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.neg_per_image = neg_per_image
        self.neg_categories = frozenset(neg_categories)
        self.image_augment = image_augment
        self.views = views or ViewSpec()
        self.tag_index = {t: i for i, t in enumerate(tag_vocabulary)} if tag_vocabulary else None
        unknown = sorted(set(rows) - set(ROW_VALUES))
        if unknown:
            raise ValueError(f"unknown per-row values {', '.join(unknown)}; known: {', '.join(sorted(ROW_VALUES))}")
        self.rows = tuple(rows)
        self.row_context = RowContext(self.tag_index)
        options = getattr(dataset, "data_options", None)
        self.on_error = cast(  # a source's on_error, like data_options', is a str
            str, on_error or getattr(options, "on_error", None) or getattr(dataset, "on_error", "raise")
        )
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        self.rewrite_sampling = bool(
            rewrite_sampling if rewrite_sampling is not None else getattr(options, "rewrite_sampling", False)
        )
        text_aug = self.views.text_augment
        if text_aug is not None and not text_aug.lexicon:
            lexicon = lexicon if lexicon is not None else load_lexicon(getattr(options, "synonyms", ""))
            text_aug.lexicon = {k.lower(): list(v) for k, v in lexicon.items() if v}

    @property
    def streaming(self) -> bool:
        return bool(getattr(self.dataset, "streaming", False))

    def __len__(self) -> int:
        return len(self.dataset)

    def _bad(self, err: DataError) -> Skipped:
        if self.on_error == "raise":
            raise err
        return Skipped(err.reason, err.where)

    def __getitem__(self, key: tuple[int, int]) -> Sample | Skipped:
        epoch, index = key
        return self.process(self.dataset[index], epoch, index)

    def check(self, record: Record) -> Skipped | None:
        """Only the validity checks of :meth:`process` (no transform): used to fast-forward a stream."""
        try:
            problem = getattr(record, "problem", None)
            if problem is not None:
                raise problem.error()
            if not record.captions:
                raise DataError("empty_caption", record.key or "?", "has no caption")
            if self.on_error == "skip":
                record.load_image()
        except DataError as err:
            return self._bad(err)
        return None

    def process(self, record: Record, epoch: int, index: int) -> Sample | Skipped:
        """One record -> a Sample (or Skipped in skip mode); every choice seeded by (seed, epoch, index)."""
        problem = getattr(record, "problem", None)
        if problem is not None:
            return self._bad(problem.error())
        rng = random.Random(f"{self.seed}/{epoch}/{index}")
        if not record.captions:
            return self._bad(DataError("empty_caption", record.key or str(index), "has no caption"))
        caption = rng.choice(record.captions)
        if self.rewrite_sampling and record.rewrites:
            caption = random.Random(f"{self.seed}/{epoch}/{index}/rewrite").choice([caption, *record.rewrites])
        negatives: list[str] = []
        if self.neg_per_image:
            pool = [
                c
                for category, group in record.neg_captions.items()
                if not self.neg_categories or category in self.neg_categories
                for c in group
            ]
            negatives = rng.sample(pool, min(self.neg_per_image, len(pool)))
        anchor = getattr(record, "anchor", None)
        if anchor is not None:
            return self._text_pair(record, anchor, caption, negatives, index, epoch, rng)
        try:
            image = record.load_image()
        except DataError as err:
            return self._bad(err)
        base = seeded(self.image_augment, rng.randrange(2**31))(image) if self.image_augment else image
        sample = Sample(self.transform(base), caption, negatives, index, epoch=epoch)
        rows: dict[str, Tensor] = {}
        if self.views.count:
            augment = self.views.image_augment or (lambda img: img)
            seeds = [rng.randrange(2**31) for _ in range(self.views.count)]
            if isinstance(augment, BoxedCrop):  # the views' crop boxes: PixPro's coordinates
                sample.image_views, rows["view_boxes"] = boxed_views(image, augment, self.transform, seeds)
            else:
                sample.image_views = to_tensor_views(image, augment, self.transform, seeds)
            text_aug = self.views.text_augment
            before = text_aug.skipped_synonyms if text_aug else 0
            sample.text_views = [
                text_aug(rng.choice(record.captions), rng) if text_aug else rng.choice(record.captions)
                for _ in range(self.views.count)
            ]
            if text_aug and text_aug.kind == "eda":
                sample.counts["synonym_skipped"] = text_aug.skipped_synonyms - before
        sample.rows = {**{key: ROW_VALUES[key](record, self.row_context) for key in self.rows}, **rows}
        return sample

    def _text_pair(
        self,
        record: Record,
        anchor: str,
        caption: str,
        negatives: list[str],
        index: int,
        epoch: int,
        rng: random.Random,
    ) -> Sample:
        """A text pair's sample: no pixels; its views are copies of the positive (the towers' dropout varies them)."""
        sample = Sample(EMPTY_PIXELS, caption, negatives, index, epoch=epoch, anchor=anchor)
        if self.views.count:
            sample.text_views = [caption] * self.views.count
        sample.rows = {key: ROW_VALUES[key](record, self.row_context) for key in self.rows}
        return sample


def tag_vocabulary(dataset: Dataset, scan: int = 2000) -> list[str]:
    """Sorted tags (positive or negative) seen in the first ``scan`` records."""
    tags: set[str] = set()
    for i in range(min(scan, len(dataset))):
        record = dataset[i]
        tags.update(record.tags)
        tags.update(record.neg_tags)
    return sorted(tags)
