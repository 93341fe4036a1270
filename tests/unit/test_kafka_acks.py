"""schemas.kafka: when a send counts as acknowledged, failed, or must be redone; and where a
keyed record goes."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiokafka.partitioner import DefaultPartitioner

from schemas.kafka import _acknowledged, partition_for

pytestmark = pytest.mark.unit


def _futures(n: int) -> list[asyncio.Future[object]]:
    loop = asyncio.get_running_loop()
    return [loop.create_future() for _ in range(n)]


async def test_true_once_every_record_is_acknowledged() -> None:
    futures, (retired,) = _futures(3), _futures(1)
    task = asyncio.create_task(_acknowledged(futures, retired))
    for fut in futures:
        await asyncio.sleep(0)
        assert not task.done()
        fut.set_result(None)
    assert await task is True
    assert not retired._callbacks  # nothing left behind on the long-lived future


async def test_the_first_error_is_raised() -> None:
    futures, (retired,) = _futures(2), _futures(1)
    futures[0].set_result(None)
    futures[1].set_exception(ValueError("record too large"))
    with pytest.raises(ValueError, match="too large"):
        await _acknowledged(futures, retired)


async def test_false_when_the_producer_is_replaced_first() -> None:
    futures, (retired,) = _futures(2), _futures(1)
    futures[0].set_result(None)
    task = asyncio.create_task(_acknowledged(futures, retired))
    await asyncio.sleep(0)
    retired.set_result(None)
    assert await task is False
    assert not futures[1]._callbacks


async def test_records_acknowledged_when_the_producer_was_replaced_count() -> None:
    futures, (retired,) = _futures(1), _futures(1)
    retired.set_result(None)
    futures[0].set_result(None)
    assert await _acknowledged(futures, retired) is True


async def test_cancelling_the_wait_leaves_no_callbacks() -> None:
    futures, (retired,) = _futures(1), _futures(1)
    task = asyncio.create_task(_acknowledged(futures, retired))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not retired._callbacks and not futures[0]._callbacks


def test_the_partitioner_places_keys_as_kafkas_default_does() -> None:
    """Consumers of our topics rely on Kafka's key → partition mapping (keys of one job or one
    site land together, and Java producers agree); remembering hashes must not change it."""
    rng = random.Random(7)
    for n in (1, 3, 6, 12):
        partitions = list(range(n))
        keys = [rng.randbytes(rng.randint(0, 40)) for _ in range(300)] + [b"example.com"] * 3
        for key in keys:
            assert partition_for(key, partitions, partitions) == DefaultPartitioner()(
                key, partitions, partitions
            )
    # Known value from Kafka's Java client: murmur2(b"21") = -973932308.
    assert partition_for(b"21", list(range(100)), []) == (-973932308 & 0x7FFFFFFF) % 100
    # No key: any available partition.
    assert partition_for(None, [0, 1, 2], [2]) == 2
