"""connectors.sinks.base.poll_batch: what is there now plus what arrives within the wait."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition

from connectors.sinks.base import poll_batch

pytestmark = pytest.mark.unit

TP0 = TopicPartition("scrape.results", 0)
TP1 = TopicPartition("scrape.results", 1)


class _Consumer:
    """Hands out scripted polls: (delay before the records are there, {tp: [offsets]})."""

    def __init__(self, script: list[tuple[float, dict[TopicPartition, list[int]]]]) -> None:
        self.script = script
        self.calls: list[int | None] = []

    async def getmany(self, timeout_ms: int, max_records: int | None = None) -> dict[Any, Any]:
        self.calls.append(max_records)
        if not self.script or self.script[0][0] > timeout_ms / 1000:
            await asyncio.sleep(timeout_ms / 1000)
            if self.script:
                self.script[0] = (self.script[0][0] - timeout_ms / 1000, self.script[0][1])
            return {}
        delay, records = self.script.pop(0)
        await asyncio.sleep(delay)
        return {tp: list(offsets) for tp, offsets in records.items()}


async def test_records_arriving_within_the_wait_join_one_batch_in_order() -> None:
    consumer = _Consumer([(0, {TP0: [1, 2]}), (0.005, {TP0: [3], TP1: [7]}), (0.15, {TP0: [4]})])
    assert await poll_batch(consumer, 500, 0.05) == {TP0: [1, 2, 3], TP1: [7]}
    assert await poll_batch(consumer, 500, 0.05) == {TP0: [4]}


async def test_a_full_batch_does_not_wait() -> None:
    consumer = _Consumer([(0, {TP0: [1, 2, 3]}), (0, {TP0: [4]})])
    assert await asyncio.wait_for(poll_batch(consumer, 3, 5), 1) == {TP0: [1, 2, 3]}
    assert consumer.calls == [3]


async def test_no_wait_configured_returns_what_is_there() -> None:
    consumer = _Consumer([(0, {TP0: [1]}), (0, {TP0: [2]})])
    assert await poll_batch(consumer, 500, 0) == {TP0: [1]}
    assert consumer.calls == [500]


async def test_group_commit_keeps_collecting_until_the_interval_is_over() -> None:
    consumer = _Consumer(
        [(0, {TP0: [1]}), (0.05, {TP0: [2]}), (0.05, {TP1: [8]}), (0.1, {TP0: [3]})]
    )
    until = asyncio.get_running_loop().time() + 0.15
    # The wait alone (10 ms) would stop after [1]; the previous write was recent, so the batch
    # collects what arrives until the interval is over.
    assert await poll_batch(consumer, 500, 0.01, until=until) == {TP0: [1, 2], TP1: [8]}
    assert asyncio.get_running_loop().time() >= until


async def test_after_a_quiet_interval_only_the_wait_applies() -> None:
    consumer = _Consumer([(0, {TP0: [1]}), (0.1, {TP0: [2]})])
    past = asyncio.get_running_loop().time() - 1
    assert await poll_batch(consumer, 500, 0.01, until=past) == {TP0: [1]}
