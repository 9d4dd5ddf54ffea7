"""Records -> training batches: deterministic sampling, transforms, collate.

Map-style sources (manifests, folders, Hugging Face, the synthetic world):
batch ``s`` of a run is a pure function of (seed, s): each epoch is a seeded
permutation and every random choice of a record (which caption, which
rewrite, which hard negatives, the augmentation) is seeded by (seed, epoch,
index). A resumed run therefore sees exactly the batches an uninterrupted run
would, in any number of workers.

Streaming sources (webdataset shards): see :func:`make_train_loader`.

Bad records (``data.on_error``): with ``raise`` the first one stops training
with a :class:`~contrastkit.data.problems.DataError` naming it; with ``skip``
it is dropped from its batch and counted by reason in ``batch["skipped"]``
(``{reason: count}``; the trainer adds these up into ``metrics.jsonl`` and
the report). A map-style batch that held a bad record is that much smaller,
so every good record is still seen exactly once per epoch and batch ``s``
still depends only on (seed, s); a streamed batch is always full.
Decoding and augmentation run in the ``data.workers`` DataLoader processes;
batches are pinned when CUDA is available.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info

from .problems import DataError, Problem, stable_id
from .records import Dataset, Record
from .transforms import TextAugment, load_lexicon, seeded, to_tensor_views


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
    counts: dict[str, int] = field(default_factory=dict)  # augmentation events (e.g. synonym_skipped)
    epoch: int = 0  # the pass over the data this sample belongs to


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

    ``on_error``, ``rewrite_sampling`` and ``lexicon`` default to the source's ``data_options`` (set by
    :func:`~contrastkit.data.sources.open_source` from the DataConfig); a text augmentation without a
    lexicon of its own gets ``data.synonyms``.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Image.Image], Tensor], seed: int,
                 neg_per_image: int = 0, image_augment: Callable[[Image.Image], Image.Image] | None = None,
                 views: ViewSpec | None = None, tag_vocabulary: Sequence[str] | None = None, *,
                 on_error: str | None = None, rewrite_sampling: bool | None = None,
                 lexicon: dict[str, list[str]] | None = None) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.neg_per_image = neg_per_image
        self.image_augment = image_augment
        self.views = views or ViewSpec()
        self.tag_index = {t: i for i, t in enumerate(tag_vocabulary)} if tag_vocabulary else None
        options = getattr(dataset, "data_options", None)
        self.on_error = on_error or getattr(options, "on_error", None) or getattr(dataset, "on_error", "raise")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        self.rewrite_sampling = bool(rewrite_sampling if rewrite_sampling is not None
                                     else getattr(options, "rewrite_sampling", False))
        text_aug = self.views.text_augment
        if text_aug is not None and not text_aug.lexicon:
            lexicon = lexicon if lexicon is not None else load_lexicon(getattr(options, "synonyms", ""))
            text_aug.lexicon = {k.lower(): list(v) for k, v in lexicon.items() if v}

    @property
    def streaming(self) -> bool:
        return bool(getattr(self.dataset, "streaming", False))

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
            pool = [c for group in record.neg_captions.values() for c in group]
            negatives = rng.sample(pool, min(self.neg_per_image, len(pool)))
        try:
            image = record.load_image()
        except DataError as err:
            return self._bad(err)
        base = seeded(self.image_augment, rng.randrange(2**31))(image) if self.image_augment else image
        sample = Sample(self.transform(base), caption, negatives, index, epoch=epoch)
        if self.views.count:
            augment = self.views.image_augment or (lambda img: img)
            seeds = [rng.randrange(2**31) for _ in range(self.views.count)]
            sample.image_views = to_tensor_views(image, augment, self.transform, seeds)
            text_aug = self.views.text_augment
            before = text_aug.skipped_synonyms if text_aug else 0
            sample.text_views = [text_aug(rng.choice(record.captions), rng) if text_aug else rng.choice(record.captions)
                                 for _ in range(self.views.count)]
            if text_aug and text_aug.kind == "eda":
                sample.counts["synonym_skipped"] = text_aug.skipped_synonyms - before
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


def collate(samples: Sequence[Sample | Skipped], skipped: Counter[str] | None = None) -> dict[str, Any]:
    """Stack pixels (and views); keep texts as lists (the model's tokenizer runs in the main process).

    Skipped records are left out and counted in ``batch["skipped"]`` (``{reason: count}``, with the
    ``skipped`` counts passed in). ``batch["epoch"]`` holds each row's epoch; per-row augmentation event
    counts become B-long tensors (``batch["synonym_skipped"]``: EDA synonym replacements skipped for lack
    of a lexicon entry), so micro-batch splitting slices them like any other row field.
    """
    counts: Counter[str] = Counter(skipped or {})
    good = [s for s in samples if isinstance(s, Sample)]
    counts.update(s.reason for s in samples if isinstance(s, Skipped))
    if not good:
        raise DataError("empty_batch", "a batch", f"every record of the batch was bad ({dict(counts)}); "
                        "run `contrastkit data check` on the source")
    batch: dict[str, Any] = {
        "pixels": torch.stack([s.pixels for s in good]),
        "captions": [s.caption for s in good],
        "neg_captions": [s.neg_captions for s in good],
        "index": torch.tensor([s.index for s in good], dtype=torch.long),
        "epoch": torch.tensor([s.epoch for s in good], dtype=torch.long),
        "skipped": dict(counts),
    }
    if good[0].image_views is not None:
        batch["image_views"] = torch.stack([s.image_views for s in good], dim=1)  # V x B x C x H x W
        batch["text_views"] = [list(view) for view in zip(*[s.text_views for s in good])]  # V lists of B
    if good[0].tag_targets is not None:
        batch["tag_targets"] = torch.stack([s.tag_targets for s in good])
    for name in sorted({name for s in good for name in s.counts}):  # per-row event counts, e.g. synonym_skipped
        batch[name] = torch.tensor([s.counts.get(name, 0) for s in good], dtype=torch.long)
    return batch


class StreamBatches(IterableDataset):
    """Full batches from a streaming source, for one rank; each DataLoader worker reads its own shards.

    Reader ``slot = rank * workers + reader`` of ``world * workers`` (see
    :meth:`~contrastkit.data.shards.WebDatasetSource.stream`). A worker batches its own records; the
    DataLoader hands out the workers' batches in turn, so batch ``s`` of the rank is batch ``s // W`` of
    reader ``s % W``. ``start_step`` fast-forwards each worker past its earlier batches without
    transforming them (images are still decoded in skip mode, to find the same bad records again).
    """

    def __init__(self, dataset: TrainingSet, batch_size: int, seed: int, rank: int, world_size: int,
                 start_step: int = 0, resample: bool = False, shuffle_buffer: int = 1000) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.resample, self.shuffle_buffer = resample, shuffle_buffer

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader asks its workers in turn starting with worker 0, so on resume worker k plays
        # reader (k + start_step) % W: reader r makes batches r, r + W, ... of the run.
        reader = (worker + self.start_step) % workers
        slot, slots = self.rank * workers + reader, self.world_size * workers
        skip_batches = max(0, -(-(self.start_step - reader) // workers))
        source = self.dataset.dataset
        stream = source.stream(self.seed, slot, slots, self.resample, self.shuffle_buffer)
        samples: list[Sample | Skipped] = []
        skipped: Counter[str] = Counter()
        made = 0
        for epoch, item in stream:
            fast = made < skip_batches
            if isinstance(item, Problem):
                if self.dataset.on_error == "raise":
                    raise item.error()
                skipped[item.reason] += 1
                continue
            if fast:
                bad = self.dataset.check(item)
                if bad is None:
                    samples.append(bad)  # type: ignore[arg-type] - a placeholder: only the count matters
            else:
                result = self.dataset.process(item, epoch, stable_id(item.key))
                if isinstance(result, Skipped):
                    skipped[result.reason] += 1
                else:
                    samples.append(result)
            if len(samples) == self.batch_size:
                if not fast:
                    yield collate(samples, skipped)
                made += 1
                samples, skipped = [], Counter()


class StepLoader:
    """Exactly ``steps`` batches from an endless loader (stops with an error if the stream runs dry)."""

    def __init__(self, loader: DataLoader, steps: int, name: str) -> None:
        self.loader, self.steps, self.name = loader, steps, name

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.steps <= 0:
            return
        made = 0
        batches = iter(self.loader)
        try:
            for batch in batches:
                yield batch
                made += 1
                if made == self.steps:
                    return
        finally:
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:  # stop the endless workers now, not when the iterator is collected
                shutdown()
        raise RuntimeError(f"{self.name}: the stream ended after {made} of {self.steps} batches (too few shards "
                           "for the readers, or no usable records)")


def make_train_loader(dataset: TrainingSet, batch_size: int, steps: int, seed: int, start_step: int = 0,
                      workers: int = 0, rank: int | None = None, world_size: int | None = None, *,
                      resample: bool | None = None, shuffle_buffer: int | None = None) -> Any:
    """This rank's share of the global batches for steps ``start_step .. steps - 1``.

    ``batch_size`` is the global batch; each of ``world_size`` ranks gets ``batch_size / world_size``
    rows. ``rank`` / ``world_size`` default to the process group's (0 / 1 without one).

    Map-style data: a DataLoader over :class:`StepBatchSampler`; global batch ``s`` depends only on
    (seed, s), whatever the number of ranks or workers.

    Streaming data (``dataset.streaming``; webdataset shards): a :class:`StreamBatches` per rank, read
    by ``workers`` processes, cut to ``steps - start_step`` batches. Each epoch every sample is read by
    exactly one (rank, worker) reader. The stream is a pure function of (seed, ranks, workers): with the
    same ``data.workers`` and ranks a resumed run fast-forwards to ``start_step`` and sees the batches
    the uninterrupted run saw (it re-reads the records it passes, without transforming them). Resuming
    with another worker or rank count gives different (still duplicate-free per epoch) batches: a
    documented limitation. ``resample`` / ``shuffle_buffer`` default to the source's ``data_options``
    (data.resample, data.shuffle_buffer).
    """
    from .. import distributed as dist_utils

    rank = dist_utils.rank() if rank is None else rank
    world_size = dist_utils.world_size() if world_size is None else world_size
    pin = torch.cuda.is_available()
    if not dataset.streaming:
        sampler = StepBatchSampler(len(dataset), batch_size, steps, seed, start_step, rank, world_size)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                          persistent_workers=False, pin_memory=pin)
    if batch_size % world_size:
        raise ValueError(f"train.batch_size ({batch_size}) must be divisible by the number of processes "
                         f"({world_size})")
    options = getattr(dataset.dataset, "data_options", None)
    resample = bool(getattr(options, "resample", False) if resample is None else resample)
    readers = world_size * max(1, workers)
    shards = getattr(dataset.dataset, "shards", None)
    if not resample and shards is not None and len(shards) < readers:
        raise ValueError(f"{getattr(dataset.dataset, 'name', 'stream')}: {len(shards)} shards cannot feed "
                         f"{readers} readers ({world_size} ranks x {max(1, workers)} workers) without some "
                         "getting none; lower data.workers, write more shards (contrastkit data convert "
                         "--shard-size), or set data.resample=true")
    stream = StreamBatches(
        dataset, batch_size // world_size, seed, rank=rank, world_size=world_size, start_step=start_step,
        resample=resample,
        shuffle_buffer=int(getattr(options, "shuffle_buffer", 1000) if shuffle_buffer is None else shuffle_buffer),
    )
    loader = DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=False, pin_memory=pin)
    return StepLoader(loader, steps - start_step, getattr(dataset.dataset, "name", "stream"))
