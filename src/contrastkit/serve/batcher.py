"""Group concurrent queries into one forward pass of the text or image tower (dynamic batching).

A tower's forward pass on 16 captions costs little more than on one, so a service that embeds each
request alone spends most of its time on per-call overhead. :class:`QueryBatcher` lets requests that
arrive while a batch is being embedded wait for the next batch: the first request of an idle batcher
starts a batch at once (no added latency when there is no load); under load, each forward pass takes
every request queued meanwhile, up to ``max_batch``. The forward pass runs in a worker thread, so the
event loop keeps accepting requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")


class QueryBatcher(Generic[Item]):
    """``await batcher(item)`` -> ``fn([... item ...])[its position]``; ``fn`` returns one result per item, in order
    (a list, or an array whose rows are the results)."""

    def __init__(self, fn: Callable[[list[Item]], Any], max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.fn = fn
        self.max_batch = max_batch
        self.queue: list[tuple[Item, asyncio.Future[Any]]] = []
        self.running = False
        self.task: asyncio.Task[None] | None = None
        self.batch_sizes: list[int] = []  # of every forward pass, for tests and diagnostics

    async def __call__(self, item: Item) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.queue.append((item, future))
        if not self.running:
            self.running = True
            self.task = loop.create_task(self._drain())  # kept: the loop holds tasks only weakly
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.queue:
                batch, self.queue = self.queue[: self.max_batch], self.queue[self.max_batch :]
                self.batch_sizes.append(len(batch))
                try:
                    results = await loop.run_in_executor(None, self.fn, [item for item, _ in batch])
                except Exception as err:  # every waiting request gets the error, none hangs
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(err)
                    continue
                for (_, future), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.running = False
