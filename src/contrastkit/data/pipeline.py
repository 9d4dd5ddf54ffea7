"""Records -> training batches: deterministic sampling, transforms, collate.

Batch ``s`` of a run is a pure function of (seed, s): each epoch is a seeded
permutation and every random choice of a record (which caption, which hard
negatives) is seeded by (seed, epoch, index). A resumed run therefore sees
exactly the batches an uninterrupted run would, in any number of workers.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from .records import Dataset, Record
from .transforms import TextAugment, seeded, to_tensor_views


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields ``[(epoch, index), ...]`` for steps ``start_step .. steps - 1`` (last partial batch dropped).

    With ``world_size`` > 1 each rank gets its slice of the same global batch.
    """

    def __init__(self, size: int, batch_size: int, steps: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size > size:
            raise ValueError(f"train.batch_size ({batch_size}) is larger than the dataset ({size} records); "
                             "lower the batch size or add data")
        if batch_size % world_size:
            raise ValueError(f"train.batch_size ({batch_size}) must be divisible by the number of processes "
                             f"({world_size})")
        self.size, self.batch_size, self.steps, self.seed = size, batch_size, steps, seed
        self.start_step = start_step
        self.steps_per_epoch = size // batch_size
        # Each rank takes its contiguous share of the global batch, in rank order.
        self.local = batch_size // world_size
        self.offset = rank * self.local

    def _permutation(self, epoch: int) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=gen)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, perm = -1, torch.empty(0, dtype=torch.long)
        for step in range(self.start_step, self.steps):
            e, offset = divmod(step, self.steps_per_epoch)
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            chunk = perm[offset * self.batch_size:(offset + 1) * self.batch_size]
            yield [(epoch, i) for i in chunk[self.offset:self.offset + self.local].tolist()]

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)


@dataclass
class Sample:
    pixels: Tensor
    caption: str
    neg_captions: list[str]
    index: int
    image_views: Tensor | None = None  # V x C x H x W
    text_views: list[str] | None = None  # V captions
    tag_targets: Tensor | None = None  # T in {1, 0, -1}


@dataclass
class ViewSpec:
    """Extra augmented views per record (CL2L-style local views)."""

    count: int = 0
    image_augment: Callable[[Image.Image], Image.Image] | None = None
    text_augment: TextAugment | None = None


class TrainingSet(torch.utils.data.Dataset):
    """Applies the image transform and the seeded per-record choices (caption, negatives, views)."""

    def __init__(self, dataset: Dataset, transform: Callable[[Image.Image], Tensor], seed: int,
                 neg_per_image: int = 0, image_augment: Callable[[Image.Image], Image.Image] | None = None,
                 views: ViewSpec | None = None, tag_vocabulary: Sequence[str] | None = None) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.neg_per_image = neg_per_image
        self.image_augment = image_augment
        self.views = views or ViewSpec()
        self.tag_index = {t: i for i, t in enumerate(tag_vocabulary)} if tag_vocabulary else None

    def __len__(self) -> int:
        return len(self.dataset)

    def _tag_targets(self, record: Record) -> Tensor:
        assert self.tag_index is not None
        target = torch.full((len(self.tag_index),), -1.0)
        for tag in record.neg_tags:
            if tag in self.tag_index:
                target[self.tag_index[tag]] = 0.0
        for tag in record.tags:
            if tag in self.tag_index:
                target[self.tag_index[tag]] = 1.0
        return target

    def __getitem__(self, key: tuple[int, int]) -> Sample:
        epoch, index = key
        record = self.dataset[index]
        rng = random.Random(f"{self.seed}/{epoch}/{index}")
        if not record.captions:
            raise ValueError(f"record {record.key or index}: has no caption")
        caption = rng.choice(record.captions)
        negatives: list[str] = []
        if self.neg_per_image:
            pool = [c for group in record.neg_captions.values() for c in group]
            negatives = rng.sample(pool, min(self.neg_per_image, len(pool)))
        image = record.load_image()
        base = seeded(self.image_augment, rng.randrange(2**31))(image) if self.image_augment else image
        sample = Sample(self.transform(base), caption, negatives, index)
        if self.views.count:
            augment = self.views.image_augment or (lambda img: img)
            seeds = [rng.randrange(2**31) for _ in range(self.views.count)]
            sample.image_views = to_tensor_views(image, augment, self.transform, seeds)
            text_aug = self.views.text_augment
            sample.text_views = [text_aug(rng.choice(record.captions), rng) if text_aug else rng.choice(record.captions)
                                 for _ in range(self.views.count)]
        if self.tag_index is not None:
            sample.tag_targets = self._tag_targets(record)
        return sample


def tag_vocabulary(dataset: Dataset, scan: int = 2000) -> list[str]:
    """Sorted tags (positive or negative) seen in the first ``scan`` records."""
    tags: set[str] = set()
    for i in range(min(scan, len(dataset))):
        record = dataset[i]
        tags.update(record.tags)
        tags.update(record.neg_tags)
    return sorted(tags)


def collate(samples: Sequence[Sample]) -> dict[str, Any]:
    """Stack pixels (and views); keep texts as lists (the model's tokenizer runs in the main process)."""
    batch: dict[str, Any] = {
        "pixels": torch.stack([s.pixels for s in samples]),
        "captions": [s.caption for s in samples],
        "neg_captions": [s.neg_captions for s in samples],
        "index": torch.tensor([s.index for s in samples], dtype=torch.long),
    }
    if samples[0].image_views is not None:
        batch["image_views"] = torch.stack([s.image_views for s in samples], dim=1)  # V x B x C x H x W
        batch["text_views"] = [list(view) for view in zip(*[s.text_views for s in samples])]  # V lists of B
    if samples[0].tag_targets is not None:
        batch["tag_targets"] = torch.stack([s.tag_targets for s in samples])
    return batch


def make_train_loader(dataset: TrainingSet, batch_size: int, steps: int, seed: int, start_step: int = 0,
                      workers: int = 0, rank: int = 0, world_size: int = 1) -> DataLoader:
    """This rank's share of the global batches for steps ``start_step .. steps - 1``.

    Global batch ``s`` depends only on (seed, s), whatever the number of ranks or workers.
    """
    sampler = StepBatchSampler(len(dataset), batch_size, steps, seed, start_step, rank, world_size)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                      persistent_workers=False)
