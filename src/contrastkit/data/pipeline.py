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
from torch.utils.data import Sampler

from .records import Dataset


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields ``[(epoch, index), ...]`` for steps ``start_step .. steps - 1`` (last partial batch dropped)."""

    def __init__(self, size: int, batch_size: int, steps: int, seed: int, start_step: int = 0) -> None:
        if batch_size > size:
            raise ValueError(f"train.batch_size ({batch_size}) is larger than the dataset ({size} records); "
                             "lower the batch size or add data")
        self.size, self.batch_size, self.steps, self.seed = size, batch_size, steps, seed
        self.start_step = start_step
        self.steps_per_epoch = size // batch_size

    def _permutation(self, epoch: int) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=gen)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, perm = -1, torch.empty(0, dtype=torch.long)
        for step in range(self.start_step, self.steps):
            e, offset = divmod(step, self.steps_per_epoch)
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            chunk = perm[offset * self.batch_size:(offset + 1) * self.batch_size].tolist()
            yield [(epoch, i) for i in chunk]

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)


@dataclass
class Sample:
    pixels: Tensor
    caption: str
    neg_captions: list[str]
    tags: list[str]
    neg_tags: list[str]
    index: int


class TrainingSet(torch.utils.data.Dataset):
    """Applies the image transform and the seeded per-record text choices."""

    def __init__(self, dataset: Dataset, transform: Callable[[Image.Image], Tensor], seed: int,
                 neg_per_image: int = 0) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.neg_per_image = neg_per_image

    def __len__(self) -> int:
        return len(self.dataset)

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
        return Sample(self.transform(record.load_image()), caption, negatives, record.tags, record.neg_tags, index)


def collate(samples: Sequence[Sample]) -> dict[str, Any]:
    """Stack pixels; keep texts as lists (the model's tokenizer runs in the main process)."""
    return {
        "pixels": torch.stack([s.pixels for s in samples]),
        "captions": [s.caption for s in samples],
        "neg_captions": [s.neg_captions for s in samples],
        "tags": [s.tags for s in samples],
        "neg_tags": [s.neg_tags for s in samples],
        "index": torch.tensor([s.index for s in samples], dtype=torch.long),
    }
