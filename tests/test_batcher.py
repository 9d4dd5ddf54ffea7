"""QueryBatcher: concurrent queries share one call, each gets its own result, errors reach every waiter."""

from __future__ import annotations

import asyncio
import threading

import pytest

from contrastkit.serve.batcher import QueryBatcher


def test_concurrent_queries_share_forward_passes_and_each_gets_its_own_result():
    release = threading.Event()
    calls: list[list[int]] = []

    def square(items: list[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            release.wait(5)  # hold the first batch while the others queue up
        return [i * i for i in items]

    async def scenario() -> list[int]:
        batcher = QueryBatcher(square, max_batch=4)
        first = asyncio.create_task(batcher(0))
        await asyncio.sleep(0.05)  # the first forward pass has started with [0]
        rest = [asyncio.create_task(batcher(i)) for i in range(1, 7)]
        await asyncio.sleep(0.05)
        release.set()
        out = await asyncio.gather(first, *rest)
        assert batcher.batch_sizes == [1, 4, 2] and not batcher.running
        return out

    assert asyncio.run(scenario()) == [i * i for i in range(7)]
    assert calls == [[0], [1, 2, 3, 4], [5, 6]]


def test_an_error_reaches_every_waiting_query_and_the_batcher_recovers():
    def fails_on_negative(items: list[int]) -> list[int]:
        if any(i < 0 for i in items):
            raise ValueError("negative")
        return items

    async def scenario() -> None:
        batcher = QueryBatcher(fails_on_negative)
        results = await asyncio.gather(batcher(-1), batcher(2), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
        assert await batcher(3) == 3

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        QueryBatcher(fails_on_negative, max_batch=0)
