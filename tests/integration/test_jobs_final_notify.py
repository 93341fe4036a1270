"""How ``?wait=`` requests learn that their job is final, against the real PostgreSQL server:
the results sink's NOTIFY_FINAL statement, and the gateway's JobListener with its reconnection."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from connectors.db import migrate
from connectors.gateway.waiters import JobListener, Waiters
from connectors.sinks.pg import JOBS_FINAL_CHANNEL, NOTIFY_CHUNK, NOTIFY_FINAL, notify_params
from scrapifie.local.postgres import LocalPostgres

pytestmark = pytest.mark.integration


async def test_notify_final_sends_chunks_of_ids_on_commit_only(postgres: LocalPostgres) -> None:
    await migrate(postgres.dsn)
    ids = {str(uuid.uuid4()) for _ in range(2 * NOTIFY_CHUNK + 100)}
    async with (
        await psycopg.AsyncConnection.connect(postgres.dsn, autocommit=True) as listener,
        await psycopg.AsyncConnection.connect(postgres.dsn) as writer,
    ):
        await listener.execute(f"LISTEN {JOBS_FINAL_CHANNEL}")
        async with writer.transaction():
            for params in notify_params(ids):
                await writer.execute(NOTIFY_FINAL, params)
            # Not before the commit: a woken waiter must find the row final. (The channel is
            # shared with any stack running on this server: only our ids count.)
            early = [
                n
                async for n in listener.notifies(timeout=0.3)
                if ids.intersection(n.payload.split(","))
            ]
            assert early == []
        payloads: list[list[str]] = []
        async with asyncio.timeout(10):
            async for notify in listener.notifies():
                chunk = notify.payload.split(",")
                if ids.intersection(chunk):  # the channel is shared with any running stack
                    payloads.append(chunk)
                if sum(map(len, payloads)) >= len(ids):
                    break
    assert sorted(len(p) for p in payloads) == [100, NOTIFY_CHUNK, NOTIFY_CHUNK]
    assert {j for p in payloads for j in p} == ids


async def test_listener_wakes_waiters_and_rewakes_them_after_reconnecting(
    postgres: LocalPostgres,
) -> None:
    waiters, connects = Waiters(), []
    job_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    async with JobListener(
        postgres.dsn, waiters, max_backoff_s=0.5, on_connect=lambda: connects.append(1)
    ) as listener:
        await asyncio.wait_for(listener.connected.wait(), 10)
        async with await psycopg.AsyncConnection.connect(postgres.dsn, autocommit=True) as conn:
            with waiters.watch(job_id) as woken, waiters.watch(other) as not_woken:
                await conn.execute(
                    "SELECT pg_notify(%s, %s)", (JOBS_FINAL_CHANNEL, f"{uuid.uuid4()},{job_id}")
                )
                await asyncio.wait_for(woken, 5)
                await asyncio.sleep(0.1)
                assert not not_woken.done()

            # The connection drops: whatever was announced meanwhile is lost, so every waiter
            # is woken once the listener is back, to look at its row again.
            with waiters.watch(other) as rewoken:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'scrapifie-gateway-listener'"
                )
                await asyncio.wait_for(rewoken, 10)
            assert len(connects) >= 2 and listener.connected.is_set()

            # And notifications flow on the new connection.
            with waiters.watch(job_id) as woken:
                await conn.execute("SELECT pg_notify(%s, %s)", (JOBS_FINAL_CHANNEL, job_id))
                await asyncio.wait_for(woken, 5)
    assert len(waiters) == 0
