"""Many handlers in flight, acknowledgements strictly in offset order per partition.

Why: Faust commits the first run of consecutive acked offsets even when an earlier offset is
still being processed (faust-streaming#606, guard in ``Consumer._new_offset`` of 0.15.3), so an
agent with ``concurrency > 1`` can commit past a fetch in flight and a crash loses it. Here one
agent (``concurrency=1``) starts a task per event and acks an event only once it and every
earlier event of its partition have finished; a crash at any moment re-delivers every
unfinished event.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Slot(Generic[T]):
    item: T
    done: bool = False


class OrderedAcks(Generic[T]):
    """Bounded window of concurrent handlers with in-order acknowledgement.

    ``submit`` waits while ``max_in_flight`` handlers run. A handler that raises is logged and
    its event is never acked, which holds back later acks of that partition (so they are
    re-delivered after a restart rather than lost).
    """

    def __init__(self, max_in_flight: int, ack: Callable[[T], Awaitable[Any]]) -> None:
        self._slots = asyncio.Semaphore(max_in_flight)
        self._ack = ack
        self._pending: dict[Hashable, deque[_Slot[T]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.failed = 0

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def submit(self, partition: Hashable, item: T, work: Coroutine[Any, Any, None]) -> None:
        try:
            await self._slots.acquire()
        except BaseException:
            work.close()
            raise
        slot = _Slot(item)
        self._pending.setdefault(partition, deque()).append(slot)
        task = asyncio.create_task(self._run(partition, slot, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, partition: Hashable, slot: _Slot[T], work: Coroutine[Any, Any, None]
    ) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failed += 1
            log.exception("handler failed; its offset will not be committed")
            return
        finally:
            self._slots.release()
        slot.done = True
        queue = self._pending[partition]
        while queue and queue[0].done:
            await self._ack(queue.popleft().item)

    async def join(self) -> None:
        """Wait for every running handler (used on orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel running handlers; their events stay unacked and will be re-delivered."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
