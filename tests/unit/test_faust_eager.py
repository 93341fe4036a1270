"""The eager hand-over of fetched records (streams/runtime/faust_eager.py): same results as Faust's
``wait_first``, without tasks when the callback does not wait; and the stream iterator's
``sleep(0)`` that suspends only every Nth event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schemas.kafka import KafkaConfig
from streams.runtime.faust_eager import (
    EagerConsumer,
    EagerTransport,
    _EveryNthSleep,
    step_eagerly,
    yield_every,
)
from streams.runtime.faust_io import new_app

pytestmark = pytest.mark.unit


async def test_a_coroutine_that_does_not_wait_finishes_in_the_first_step() -> None:
    async def quick() -> int:
        return 7

    assert step_eagerly(quick()) == (True, 7)


async def test_a_coroutine_that_waits_is_finished_by_the_rest() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def slow() -> int:
        seen.append("started")
        value = await gate
        seen.append("resumed")
        return value + 1

    finished, rest = step_eagerly(slow())
    assert not finished and seen == ["started"]
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    gate.set_result(41)
    assert await task == 42
    assert seen == ["started", "resumed"]


async def test_errors_and_cancellation_reach_the_stepped_coroutine() -> None:
    async def fails_at_once() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        step_eagerly(fails_at_once())

    cleaned: list[str] = []

    async def waits_forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("finally")

    finished, rest = step_eagerly(waits_forever())
    assert not finished
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]


@pytest.fixture
async def consumer(tmp_path: Path) -> AsyncIterator[EagerConsumer]:
    """The consumer of one of our apps, never started (no broker needed), made inside the
    test's running loop as in a worker (mode services bind to the loop current at creation)."""
    app = new_app("t", KafkaConfig(bootstrap="127.0.0.1:9"), str(tmp_path))
    assert isinstance(app.transport, EagerTransport)
    consumer = app.consumer
    assert isinstance(consumer, EagerConsumer)
    yield consumer
    consumer._thread.thread_loop.close()  # created with the consumer, never run


async def test_the_fetch_loop_call_returns_at_once_when_delivery_does_not_wait(
    consumer: EagerConsumer,
) -> None:
    delivered: list[str] = []
    suspend = asyncio.Event()

    async def deliver() -> None:
        delivered.append("record")

    other = suspend.wait()
    tasks_before = len(asyncio.all_tasks())
    result = await consumer.wait_first(deliver(), other)
    assert delivered == ["record"]
    assert not result.stopped and result.results == [None]
    assert other.cr_frame is None  # closed, never left pending
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_delivery_that_waits_is_abandoned_when_the_flow_is_suspended(
    consumer: EagerConsumer,
) -> None:
    """What a rebalance does to a record stuck behind a full agent buffer, as in Faust."""
    buffer_has_room = asyncio.Event()
    suspend = asyncio.Event()
    cleaned: list[str] = []

    async def deliver() -> None:
        try:
            await buffer_has_room.wait()
        finally:
            cleaned.append("abandoned" if not buffer_has_room.is_set() else "delivered")

    call = asyncio.ensure_future(consumer.wait_first(deliver(), suspend.wait()))
    await asyncio.sleep(0.01)
    assert not call.done()
    suspend.set()
    result = await asyncio.wait_for(call, 5)
    assert not result.stopped and len(result.done) == 1
    await asyncio.sleep(0.01)
    assert cleaned == ["abandoned"]


async def test_a_delivery_that_waits_completes_when_its_buffer_frees(
    consumer: EagerConsumer,
) -> None:
    buffer_has_room = asyncio.Event()

    async def deliver() -> str:
        await buffer_has_room.wait()
        return "delivered"

    call = asyncio.ensure_future(consumer.wait_first(deliver(), asyncio.Event().wait()))
    await asyncio.sleep(0.01)
    buffer_has_room.set()
    result = await asyncio.wait_for(call, 5)
    assert result.results == ["delivered"]


def _suspends(aw: Any) -> bool:
    """Whether awaiting ``aw`` would suspend the awaiting task."""

    async def wait() -> None:
        await aw

    coro = wait()
    finished, rest = step_eagerly(coro)
    if not finished:
        rest.close()
    return not finished


async def test_the_stream_sleep_suspends_only_every_nth_zero_sleep() -> None:
    sleep = _EveryNthSleep(4)
    assert [_suspends(sleep(0)) for _ in range(8)] == [False, False, False, True] * 2
    # Any real delay is asyncio's own sleep, which suspends.
    assert _suspends(sleep(0.001))
    assert await sleep(0) is None
    assert await sleep(0, "kept") == "kept"  # asyncio's, when a result is asked for


async def test_yield_every_patches_fausts_compiled_stream_iterator_once() -> None:
    from faust._cython import streams as compiled

    original = compiled.sleep
    try:
        compiled.sleep = asyncio.sleep
        assert yield_every(32)
        installed = compiled.sleep
        assert isinstance(installed, _EveryNthSleep) and installed.n == 32
        assert yield_every(8)  # again: the same object, new n
        assert compiled.sleep is installed and installed.n == 8
        compiled.sleep = object()  # a Faust this was not written against: left alone
        assert not yield_every(32)
    finally:
        compiled.sleep = original
