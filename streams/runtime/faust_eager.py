"""A Faust transport whose consumer hands a fetched record to the agents without a detour
through the event loop.

Faust's fetch loop (``Consumer._drain_messages`` in faust-streaming 0.15.3) passes every
record on as ``await self.wait_first(callback(record), self.suspend_flow.wait())``:
``wait_first`` wraps both coroutines and the service's stopped and crashed events in four
tasks and waits on them, so each record costs four task start-ups and cancellations and two
or three event-loop turns, even though the callback (decode, then ``put_nowait`` into the
agent's buffer) almost never has to wait. Measured on the http tier: about 0.25 ms of worker
CPU per record, and the agent was fed at most one record per couple of loop turns.

:class:`EagerConsumer` runs such a callback at once, up to its first real wait (what Python
3.12's eager tasks do). When it finishes there, which is the common case, nothing else is
created. When it does wait (its agent's buffer is full), the rest of it goes through Faust's
own ``wait_first``, so a rebalance that suspends the flow still abandons the wait exactly as
before. The code stepped eagerly runs with the fetch loop's task as the current task; Faust's
delivery path neither reads the current task nor opens ``asyncio.timeout`` scopes.

The agent side has the same kind of cost: Faust's stream iterator (the compiled
``faust._cython.streams.StreamIterator.next`` and ``Stream._py_aiter``) awaits
``asyncio.sleep(0)`` before every event, so an agent takes at most one event per turn of the
event loop. Under load a turn of the http worker's loop lasts ~2 ms (it serves the fetches and
Kafka acknowledgements of every job in flight), so the agent took ~450 events/s: the window of
``max_in_flight`` jobs stayed ~1/4 full (8-23 of 64) while 256 fetched records waited in the
agent's buffer. :func:`yield_every` makes that ``sleep(0)`` suspend only every Nth time; the
agents still yield at least that often, and whenever their own awaits (a full window, a send)
wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults


class _Resumed:
    """The rest of a coroutine that was stepped once and stopped at ``pending``: awaiting
    this hands ``pending`` to the awaiting task and resumes the coroutine when it is done."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation included: the coroutine gets to react
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    return await _Resumed(coro, pending)


def step_eagerly(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` up to its first wait: ``(True, value)`` if it finished, else
    ``(False, rest)`` where ``rest`` is a coroutine that completes it. Exceptions propagate."""
    try:
        pending = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, _finish(coro, pending)


class EagerConsumer(faust_aiokafka.Consumer):
    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:  # noqa: ASYNC109
        if (
            timeout is None
            and len(coros) == 2
            and all(asyncio.iscoroutine(c) for c in coros)
            and not self.should_stop
        ):
            # Faust's fetch loop: (deliver the record, stop waiting if the flow is suspended).
            work, other = coros
            try:
                finished, value = step_eagerly(work)
            except BaseException:
                other.close()
                raise
            if finished:
                other.close()
                return WaitResults([work], [value], False)
            coros = (value, other)
        return await super().wait_first(*coros, timeout=timeout)


class EagerTransport(faust_aiokafka.Transport):
    Consumer = EagerConsumer


class _Ready:
    """An awaitable that is done at once: awaiting it does not suspend."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, None]:
        return
        yield  # a generator that returns at once


_READY = _Ready()


class _EveryNthSleep:
    """``asyncio.sleep`` for Faust's stream iterator: ``sleep(0)`` suspends every ``n``-th
    call; any other call (a delay, a result) is asyncio's own."""

    __slots__ = ("_count", "n")

    def __init__(self, n: int) -> None:
        self.n = n
        self._count = 0

    def __call__(self, delay: float, result: Any = None) -> Any:
        if delay == 0 and result is None:
            self._count += 1
            if self._count % self.n:
                return _READY
        return asyncio.sleep(delay, result)


def yield_every(n: int) -> bool:
    """Make Faust's compiled stream iterator yield to the event loop once per ``n`` events
    instead of once per event (process-wide; idempotent). False when Faust runs its pure-Python
    iterator (no compiled extension), which is left as it is."""
    try:
        from faust._cython import streams as compiled
    except ImportError:
        return False
    current = getattr(compiled, "sleep", None)
    if isinstance(current, _EveryNthSleep):
        current.n = n
        return True
    if current is not asyncio.sleep:
        return False  # not the module this was written against: leave it alone
    compiled.sleep = _EveryNthSleep(n)
    return True
