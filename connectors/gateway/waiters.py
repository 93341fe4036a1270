"""Waiting for jobs to finish without polling: one LISTEN connection per gateway process.

The results sink sends ``NOTIFY`` on :data:`connectors.sinks.pg.JOBS_FINAL_CHANNEL` with the ids
of the jobs it made final, in the transaction that writes their rows. :class:`JobListener` holds
the one connection that listens and hands each id to :class:`Waiters`, which resolves the futures
of the requests waiting for it. A waiter reads its job row through the gateway's pool only at
start and after each wake-up, so a thousand ``?wait=`` requests cost a thousand reads in all,
not a thousand polls per second against a 16-connection pool.

No wake-up is lost: a waiter registers before its first read, so a notification sent after that
read finds it; and when the listening connection drops (notifications sent meanwhile are gone),
every waiter is woken once the connection is back, to re-read its row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from connectors.sinks.pg import JOBS_FINAL_CHANNEL
from schemas.backoff import Backoff
from schemas.records import FINAL_STATUSES

__all__ = ["JobListener", "Waiters", "wait_final"]

log = logging.getLogger(__name__)

Row = dict[str, Any]


class Waiters:
    """Job id → the futures of the requests waiting for it. No I/O; one event loop."""

    def __init__(self) -> None:
        self._by_job: dict[str, set[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return sum(len(futures) for futures in self._by_job.values())

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Future[None]]:
        """A future resolved by the next :meth:`wake` of ``job_id`` (or :meth:`wake_all`),
        registered until the block exits."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._by_job.setdefault(job_id, set()).add(future)
        try:
            yield future
        finally:
            futures = self._by_job.get(job_id)
            if futures is not None:
                futures.discard(future)
                if not futures:
                    del self._by_job[job_id]

    def wake(self, job_ids: Iterable[str]) -> int:
        """Resolve the futures of these jobs; returns how many were waiting."""
        woken = 0
        for job_id in job_ids:
            for future in self._by_job.get(job_id, ()):
                if not future.done():
                    future.set_result(None)
                    woken += 1
        return woken

    def wake_all(self) -> int:
        """Resolve every future (after notifications may have been lost)."""
        return self.wake(list(self._by_job))


async def wait_final(
    waiters: Waiters, job_id: str, timeout_s: float, read: Callable[[], Awaitable[Row | None]]
) -> Row | None:
    """The job's row once it is final, or None if it is not within ``timeout_s``.

    ``read`` runs once at start, once per wake-up and once at the deadline (a last look, in
    case the listener was down when the job finished and is still reconnecting).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        with waiters.watch(job_id) as woken:
            row = await read()
            if row is not None and row["status"] in FINAL_STATUSES:
                return row
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(woken, remaining)
            except TimeoutError:
                break
    row = await read()
    return row if row is not None and row["status"] in FINAL_STATUSES else None


class JobListener:
    """Keeps one autocommit connection listening on ``channel`` and wakes ``waiters``.

    An async context manager: entering starts the listening task (it connects in the
    background and retries with capped backoff while PostgreSQL is away), exiting stops it and
    closes the connection. ``ping_s`` is how often an idle connection is checked, so a
    half-open TCP connection is found and replaced.
    """

    def __init__(
        self,
        dsn: str,
        waiters: Waiters,
        *,
        channel: str = JOBS_FINAL_CHANNEL,
        max_backoff_s: float = 5.0,
        ping_s: float = 30.0,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._waiters = waiters
        self._channel = channel
        self._max_backoff_s = max_backoff_s
        self._ping_s = ping_s
        self._on_connect = on_connect
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def __aenter__(self) -> JobListener:
        if self._task is not None:
            raise RuntimeError("JobListener already started")
        self._task = asyncio.create_task(self._run(), name="job-listener")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = Backoff(0.1, self._max_backoff_s)
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("job listener disconnected (%s); reconnecting", exc)
            except Exception:  # a defect: keep listening rather than leave waiters to time out
                log.exception("job listener failed; restarting")
            if self.connected.is_set():
                self.connected.clear()
                backoff.reset()  # it was up: start the backoff over
            await backoff.sleep()

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=5,
            application_name="scrapifie-gateway-listener",
        ) as conn:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self.connected.set()
            if self._on_connect is not None:
                self._on_connect()
            # Anything that finished while nobody listened was not announced: look again.
            self._waiters.wake_all()
            while True:
                async for notify in conn.notifies(timeout=self._ping_s):
                    self._waiters.wake(notify.payload.split(","))
                async with asyncio.timeout(5):
                    await conn.execute("SELECT 1")
