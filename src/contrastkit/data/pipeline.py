"""Training batches for every step: deterministic sampling, map-style and streamed sources.

Map-style sources (manifests, folders, Hugging Face, the synthetic world):
batch ``s`` of a run is a pure function of (seed, s): each epoch is a seeded
permutation and every random choice of a record (which caption, which
rewrite, which hard negatives, the augmentation) is seeded by (seed, epoch,
index). A resumed run therefore sees exactly the batches an uninterrupted run
would, in any number of workers.

Streaming sources (webdataset shards): see :func:`make_train_loader`.

Bad records (``data.on_error``): with ``raise`` the first one stops training
with a :class:`~contrastkit.data.problems.DataError` naming it; with ``skip``
it is dropped from its batch and counted by reason in ``Batch.skipped``
(``{reason: count}``; the trainer adds these up into ``metrics.jsonl`` and
the report). A map-style batch that held a bad record is that much smaller,
so every good record is still seen exactly once per epoch and batch ``s``
still depends only on (seed, s); a streamed batch is always full.
Decoding and augmentation run in the ``data.workers`` DataLoader processes;
batches are pinned when CUDA is available.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import cast

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info

from .batch import Batch, collate
from .problems import Problem, StreamingSource, stable_id
from .training_set import Sample, Skipped, TrainingSet


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields ``[(epoch, index), ...]`` for steps ``start_step .. steps - 1`` (last partial batch dropped).

    With ``world_size`` > 1 each rank gets its slice of the same global batch.
    """

    def __init__(
        self, size: int, batch_size: int, steps: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size > size:
            raise ValueError(
                f"train.batch_size ({batch_size}) is larger than the dataset ({size} records); "
                "lower the batch size or add data"
            )
        if batch_size % world_size:
            raise ValueError(
                f"train.batch_size ({batch_size}) must be divisible by the number of processes ({world_size})"
            )
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
            chunk = perm[offset * self.batch_size : (offset + 1) * self.batch_size]
            yield [(epoch, i) for i in chunk[self.offset : self.offset + self.local].tolist()]

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)


class StreamBatches(IterableDataset):
    """Full batches from a streaming source, for one rank; each DataLoader worker reads its own shards.

    Reader ``slot = rank * workers + reader`` of ``world * workers`` (see
    :meth:`~contrastkit.data.shards.WebDatasetSource.stream`). A worker batches its own records; the
    DataLoader hands out the workers' batches in turn, so batch ``s`` of the rank is batch ``s // W`` of
    reader ``s % W``. ``start_step`` fast-forwards each worker past its earlier batches without
    transforming them (images are still decoded in skip mode, to find the same bad records again).
    """

    def __init__(
        self,
        dataset: TrainingSet,
        batch_size: int,
        seed: int,
        rank: int,
        world_size: int,
        start_step: int = 0,
        resample: bool = False,
        shuffle_buffer: int = 1000,
    ) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.resample, self.shuffle_buffer = resample, shuffle_buffer

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader asks its workers in turn starting with worker 0, so on resume worker k plays
        # reader (k + start_step) % W: reader r makes batches r, r + W, ... of the run.
        reader = (worker + self.start_step) % workers
        slot, slots = self.rank * workers + reader, self.world_size * workers
        skip_batches = max(0, -(-(self.start_step - reader) // workers))
        source = cast(StreamingSource, self.dataset.dataset)  # StreamBatches reads streaming data only
        stream = source.stream(self.seed, slot, slots, self.resample, self.shuffle_buffer)
        samples: list[Sample | Skipped] = []
        skipped: Counter[str] = Counter()
        passed = made = 0  # passed: good records fast-forwarded past in the current batch
        for epoch, item in stream:
            fast = made < skip_batches
            if isinstance(item, Problem):
                if self.dataset.on_error == "raise":
                    raise item.error()
                skipped[item.reason] += 1
                continue
            if fast:
                passed += self.dataset.check(item) is None
            else:
                result = self.dataset.process(item, epoch, stable_id(item.key))
                if isinstance(result, Skipped):
                    skipped[result.reason] += 1
                else:
                    samples.append(result)
            if len(samples) + passed == self.batch_size:
                if not fast:
                    yield collate(samples, skipped)
                made += 1
                samples, skipped, passed = [], Counter(), 0


class StepLoader:
    """Exactly ``steps`` batches from an endless loader (stops with an error if the stream runs dry)."""

    def __init__(self, loader: DataLoader, steps: int, name: str) -> None:
        self.loader, self.steps, self.name = loader, steps, name

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
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
        raise RuntimeError(
            f"{self.name}: the stream ended after {made} of {self.steps} batches (too few shards "
            "for the readers, or no usable records)"
        )


def make_train_loader(
    dataset: TrainingSet,
    batch_size: int,
    steps: int,
    seed: int,
    start_step: int = 0,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    *,
    resample: bool | None = None,
    shuffle_buffer: int | None = None,
) -> DataLoader | StepLoader:
    """This rank's share of the global batches for steps ``start_step .. steps - 1``.

    ``batch_size`` is the global batch; each of ``world_size`` ranks gets ``batch_size / world_size``
    rows (the engine passes its process group's rank and size).

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
    pin = torch.cuda.is_available()
    if not dataset.streaming:
        sampler = StepBatchSampler(len(dataset), batch_size, steps, seed, start_step, rank, world_size)
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=False,
            pin_memory=pin,
        )
    if batch_size % world_size:
        raise ValueError(f"train.batch_size ({batch_size}) must be divisible by the number of processes ({world_size})")
    options = getattr(dataset.dataset, "data_options", None)
    resample = bool(getattr(options, "resample", False) if resample is None else resample)
    readers = world_size * max(1, workers)
    shards = getattr(dataset.dataset, "shards", None)
    if not resample and shards is not None and len(shards) < readers:
        raise ValueError(
            f"{getattr(dataset.dataset, 'name', 'stream')}: {len(shards)} shards cannot feed "
            f"{readers} readers ({world_size} ranks x {max(1, workers)} workers) without some "
            "getting none; lower data.workers, write more shards (contrastkit data convert "
            "--shard-size), or set data.resample=true"
        )
    stream = StreamBatches(
        dataset,
        batch_size // world_size,
        seed,
        rank=rank,
        world_size=world_size,
        start_step=start_step,
        resample=resample,
        shuffle_buffer=int(getattr(options, "shuffle_buffer", 1000) if shuffle_buffer is None else shuffle_buffer),
    )
    loader = DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=False, pin_memory=pin)
    return StepLoader(loader, steps - start_step, getattr(dataset.dataset, "name", "stream"))
