"""streams.runtime.ordered.OrderedAcks: concurrent handlers, acks in order per partition."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable

import pytest

from streams.runtime.ordered import OrderedAcks

pytestmark = pytest.mark.unit


async def settle(rounds: int = 20) -> None:
    """Let every ready task run (handlers here finish without real waiting)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Harness:
    """Items are (partition, n); each handler waits for its own Event, then returns or raises."""

    def __init__(self, max_in_flight: int = 100, ack_yields: bool = False) -> None:
        self.acked: list[tuple[Hashable, int]] = []
        self.release: dict[tuple[Hashable, int], asyncio.Event] = {}
        self.fail: set[tuple[Hashable, int]] = set()
        self.running = 0
        self.max_running = 0
        self.ack_yields = ack_yields
        self.window: OrderedAcks[tuple[Hashable, int]] = OrderedAcks(max_in_flight, self.ack)

    async def ack(self, item: tuple[Hashable, int]) -> None:
        self.acked.append(item)
        if self.ack_yields:
            await asyncio.sleep(0)

    async def work(self, item: tuple[Hashable, int]) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await self.release[item].wait()
            if item in self.fail:
                raise RuntimeError(f"handler for {item} failed")
        finally:
            self.running -= 1

    async def submit(self, partition: Hashable, n: int) -> None:
        item = (partition, n)
        self.release[item] = asyncio.Event()
        await self.window.submit(partition, item, self.work(item))

    async def finish(self, partition: Hashable, n: int) -> None:
        self.release[(partition, n)].set()
        await settle()

    def acked_of(self, partition: Hashable) -> list[int]:
        return [n for p, n in self.acked if p == partition]


@pytest.mark.parametrize("ack_yields", [False, True])
async def test_out_of_order_completion_is_acked_in_submission_order(ack_yields: bool) -> None:
    h = Harness(ack_yields=ack_yields)
    for n in range(5):
        await h.submit("p0", n)
    await settle()
    assert h.running == 5  # all run concurrently

    await h.finish("p0", 3)
    await h.finish("p0", 1)
    await h.finish("p0", 4)
    assert h.acked == []  # 0 still running holds everything back

    await h.finish("p0", 0)
    assert h.acked_of("p0") == [0, 1]  # 2 still running

    await h.finish("p0", 2)
    assert h.acked_of("p0") == [0, 1, 2, 3, 4]
    await h.window.join()
    assert h.window.in_flight == 0
    assert h.window.failed == 0


async def test_partitions_are_independent() -> None:
    h = Harness()
    for n in range(3):
        await h.submit("a", n)
        await h.submit("b", n)
    await settle()

    await h.finish("b", 1)
    await h.finish("b", 2)
    await h.finish("a", 2)
    assert h.acked == []

    await h.finish("b", 0)  # b completes while a's first item is still running
    assert h.acked == [("b", 0), ("b", 1), ("b", 2)]

    await h.finish("a", 1)
    assert h.acked_of("a") == []
    await h.finish("a", 0)
    assert h.acked_of("a") == [0, 1, 2]
    assert h.acked_of("b") == [0, 1, 2]


async def test_tuple_partitions_are_distinct_keys() -> None:
    # the app passes Faust TopicPartition tuples as the partition
    h = Harness()
    await h.submit(("topic", 0), 0)
    await h.submit(("topic", 1), 0)
    await settle()
    await h.finish(("topic", 1), 0)
    assert h.acked == [(("topic", 1), 0)]


async def test_failed_handler_blocks_its_partition_only(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    for n in range(3):
        await h.submit("bad", n)
        await h.submit("good", n)
    h.fail.add(("bad", 1))
    await settle()

    with caplog.at_level(logging.ERROR, logger="streams.runtime.ordered"):
        for n in (0, 1, 2):
            await h.finish("bad", n)
            await h.finish("good", n)
        await h.window.join()

    assert h.acked_of("bad") == [0]  # 1 failed: neither it nor 2 after it is acked
    assert h.acked_of("good") == [0, 1, 2]
    assert h.window.failed == 1
    assert h.window.in_flight == 0
    assert any("handler failed" in r.getMessage() for r in caplog.records)

    # the slot of the failed handler was released: new work still runs and acks elsewhere
    await h.submit("good", 3)
    await h.finish("good", 3)
    assert h.acked_of("good") == [0, 1, 2, 3]
    # ...and later items of the blocked partition stay unacked
    await h.submit("bad", 3)
    await h.finish("bad", 3)
    assert h.acked_of("bad") == [0]


async def test_max_in_flight_bounds_concurrency_and_submit_waits() -> None:
    h = Harness(max_in_flight=2)
    await h.submit("p", 0)
    await h.submit("p", 1)
    third = asyncio.create_task(h.submit("p", 2))
    await settle()
    assert not third.done()  # submit blocks while two handlers run
    assert h.window.in_flight == 2
    assert h.running == 2

    await h.finish("p", 1)  # a later item finishing frees a slot too
    assert third.done()
    await third
    await settle()
    assert h.running == 2
    assert h.acked == []

    await h.finish("p", 0)
    await h.finish("p", 2)
    assert h.acked_of("p") == [0, 1, 2]
    assert h.max_running == 2


async def test_many_items_never_exceed_the_window() -> None:
    h = Harness(max_in_flight=3)

    async def producer() -> None:
        for n in range(20):
            await h.submit("p", n)

    task = asyncio.create_task(producer())
    await settle()
    for n in reversed(range(3)):
        await h.finish("p", n)
    # release the rest in a scrambled order as they get submitted
    async with asyncio.timeout(5):
        while not task.done() or any(not e.is_set() for e in h.release.values()):
            pending = sorted(k for k, e in h.release.items() if not e.is_set())
            if pending:
                await h.finish(*pending[-1])
            await settle()
    await task
    await h.window.join()
    assert h.max_running == 3
    assert h.acked_of("p") == list(range(20))


async def test_failed_handler_frees_its_slot() -> None:
    h = Harness(max_in_flight=1)
    h.fail.add(("p", 0))
    await h.submit("p", 0)
    await h.finish("p", 0)
    async with asyncio.timeout(1):  # would hang if the failed handler kept its slot
        await h.submit("q", 0)
    await h.finish("q", 0)
    assert h.acked == [("q", 0)]
    assert h.window.failed == 1


async def test_cancel_leaves_unfinished_items_unacked() -> None:
    h = Harness()
    for n in range(3):
        await h.submit("p", n)
    await settle()
    await h.finish("p", 0)
    await h.finish("p", 2)
    await h.window.cancel()
    assert h.acked_of("p") == [0]
    assert h.window.in_flight == 0
    assert h.window.failed == 0


async def test_cancelled_submit_closes_the_coroutine() -> None:
    h = Harness(max_in_flight=1)
    await h.submit("p", 0)
    h.release[("p", 1)] = asyncio.Event()
    coro = h.work(("p", 1))
    waiting = asyncio.create_task(h.window.submit("p", ("p", 1), coro))
    await settle()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert coro.cr_frame is None  # closed, so no "coroutine was never awaited" warning
    await h.finish("p", 0)
    assert h.acked == [("p", 0)]
