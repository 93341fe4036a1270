"""The sinks' batch statements against the real PostgreSQL server: one statement per batch must
behave exactly as the row-by-row statements did (first final result wins, router reason added
once, credits charged once), including columns that are NULL in every row of a batch."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from connectors.db import migrate
from connectors.sinks.pg import (
    INSERT_ATTEMPTS,
    INSERT_QUEUED,
    SETTLE,
    UPSERT_RESULTS,
    PgWriter,
    StoredResult,
    attempts_params,
    queued_params,
    results_params,
    settle_params,
)
from schemas.records import Escalation, Metering, ScrapeRequest, ScrapeResult
from scrapifie.admin import add_tenant
from scrapifie.local.postgres import LocalPostgres

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def _queued(tenant: str, job_id: str, reason: str | None = None) -> ScrapeRequest:
    return ScrapeRequest(
        job_id=job_id,
        tenant=tenant,
        url=f"http://example.test/{job_id}",
        tier="auto" if reason is None else "http",
        trace_id=f"trace-{job_id}",
        created_at=T0,
        router_reason=reason,
    )


def _result(tenant: str, job_id: str, status: str = "succeeded") -> StoredResult:
    ok = status == "succeeded"
    result = ScrapeResult(
        event_id=str(uuid.uuid4()),
        job_id=job_id,
        tenant=tenant,
        url=f"http://example.test/{job_id}",
        status=status,
        tier="http",
        attempts=1,
        http_status=200 if ok else None,
        error_code=None if ok else "dns_error",
        error_message=None if ok else "no such host",
        final_url=f"http://example.test/{job_id}" if ok else None,
        content_type="text/html" if ok else None,
        content_bytes=5_000_000_000 if ok else 0,  # > 2**31: bigint
        content_sha256="ab" * 32 if ok else None,
        trace_id=f"trace-{job_id}",
        created_at=T0,
        finished_at=T0 + timedelta(seconds=1),
    )
    return StoredResult(result, f"{tenant}/{job_id}" if ok else None, None)


def _metering(tenant: str, job_id: str, credits: int, event_id: str | None = None) -> Metering:
    return Metering(
        event_id=event_id or str(uuid.uuid4()),
        job_id=job_id,
        tenant=tenant,
        tier="http",
        attempt=1,
        outcome="ok" if credits else "fatal",
        duration_ms=3,
        credits=credits,
        created_at=T0,
    )


@pytest.fixture
async def db(postgres: LocalPostgres) -> Any:
    await migrate(postgres.dsn)
    tenant = f"stmt-{uuid.uuid4().hex[:8]}"
    await add_tenant(postgres.dsn, tenant, 100)
    writer = PgWriter(postgres.dsn)
    yield writer, tenant, postgres.dsn
    await writer.close()


async def _rows(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def _jobs(dsn: str, tenant: str, columns: str) -> dict[str, tuple[Any, ...]]:
    """The tenant's job rows: job_id -> the other ``columns``."""
    rows = await _rows(dsn, f"SELECT job_id, {columns} FROM jobs WHERE tenant_id = %s", tenant)
    return {r[0]: r[1:] for r in rows}


async def test_queued_rows_merge_sightings_and_add_the_router_reason_once(db: Any) -> None:
    writer, tenant, dsn = db
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    # a: seen on scrape.requests then on its tier topic in one batch; b: only the tier topic;
    # c: the same sighting twice. Every router_reason NULL in the first statement.
    await writer.execute_many(
        [
            (
                INSERT_QUEUED,
                queued_params([_queued(tenant, a), _queued(tenant, c), _queued(tenant, c)]),
            )
        ]
    )
    await writer.execute_many(
        [
            (
                INSERT_QUEUED,
                queued_params(
                    [
                        _queued(tenant, a, "robots"),
                        _queued(tenant, a, "later"),
                        _queued(tenant, b, "x"),
                    ]
                ),
            )
        ]
    )
    got = await _jobs(dsn, tenant, "status, requested_tier, router_reason, created_at")
    assert got == {
        a: ("queued", "auto", "robots", T0),
        b: ("queued", "http", "x", T0),
        c: ("queued", "auto", None, T0),
    }


async def test_results_keep_the_first_final_result_and_handle_all_null_columns(db: Any) -> None:
    writer, tenant, dsn = db
    ok, failed = str(uuid.uuid4()), str(uuid.uuid4())
    await writer.execute_many([(INSERT_QUEUED, queued_params([_queued(tenant, ok)]))])
    # Every nullable column NULL in every row of this batch (two failures).
    other = str(uuid.uuid4())
    await writer.execute_many(
        [
            (
                UPSERT_RESULTS,
                results_params(
                    [_result(tenant, failed, "failed"), _result(tenant, other, "failed")]
                ),
            )
        ]
    )
    first = _result(tenant, ok)
    await writer.execute_many(
        [(UPSERT_RESULTS, results_params([first, _result(tenant, ok, "failed")]))]
    )
    # A replay of a different final result later changes nothing.
    await writer.execute_many([(UPSERT_RESULTS, results_params([_result(tenant, ok, "failed")]))])
    await writer.execute_many([(UPSERT_RESULTS, [])])
    got = await _jobs(
        dsn,
        tenant,
        "status, http_status, error_code, content_bytes, content_key, result_event_id,"
        " created_at, finished_at, screenshot_key",
    )
    assert got[ok] == (
        "succeeded",
        200,
        None,
        5_000_000_000,
        f"{tenant}/{ok}",
        first.result.event_id,
        T0,
        T0 + timedelta(seconds=1),
        None,
    )
    assert got[failed][:5] == ("failed", None, "dns_error", 0, None)
    assert len(got) == 3


async def test_attempts_add_to_usage_once_and_never_move_balances(db: Any) -> None:
    writer, tenant, dsn = db
    job = str(uuid.uuid4())
    e1, e2 = str(uuid.uuid4()), str(uuid.uuid4())
    batch = [
        _metering(tenant, job, 1, e1),
        _metering(tenant, job, 2, e2),
        _metering(tenant, job, 1, e1),
    ]
    await writer.execute_many([(INSERT_ATTEMPTS, attempts_params(batch))])
    await writer.execute_many([(INSERT_ATTEMPTS, attempts_params(batch[:1]))])  # a replay
    await writer.execute_many([(INSERT_ATTEMPTS, attempts_params([]))])
    assert await _rows(dsn, "SELECT credits FROM tenants WHERE tenant_id = %s", tenant) == [(100,)]
    assert await _rows(
        dsn, "SELECT count(*), sum(credits) FROM attempts WHERE tenant_id = %s", tenant
    ) == [(2, 3)]
    assert await _rows(
        dsn, "SELECT sum(attempts), sum(credits) FROM usage_daily WHERE tenant_id = %s", tenant
    ) == [(2, 3)]


async def test_a_job_is_settled_once_charge_and_reservation(db: Any) -> None:
    """A final result charges its job once (a credit_ledger row) and releases the credits
    reserved for it, however often it is delivered."""
    writer, tenant, dsn = db
    job, other = str(uuid.uuid4()), str(uuid.uuid4())
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO reservations (tenant_id, job_id, amount) VALUES (%s, %s, 5), (%s, %s, 1)",
            (tenant, job, tenant, other),
        )
        await conn.execute(
            "UPDATE tenants SET reserved = 6, open_jobs = 2 WHERE tenant_id = %s", (tenant,)
        )
    done = _result(tenant, job)
    done.result.credits = 5
    free = _result(tenant, other, "failed")
    for _ in range(3):  # delivered again, and again in one batch
        await writer.execute_many([(SETTLE, settle_params([done, free, done]))])
    assert await _rows(
        dsn, "SELECT credits, reserved, open_jobs FROM tenants WHERE tenant_id = %s", tenant
    ) == [(95, 0, 0)]
    assert await _rows(
        dsn,
        "SELECT delta, reason, job_id FROM credit_ledger WHERE tenant_id = %s AND job_id"
        " IS NOT NULL",
        tenant,
    ) == [(-5, "charge", job)]
    assert await _rows(
        dsn,
        "SELECT count(*) FROM reservations WHERE tenant_id = %s AND released_at IS NULL",
        tenant,
    ) == [(0,)]


async def test_escalations_are_written_once_per_event(db: Any) -> None:
    from connectors.sinks.pg import INSERT_ESCALATIONS, escalations_params

    writer, tenant, dsn = db
    job = str(uuid.uuid4())
    event = Escalation(
        event_id=str(uuid.uuid4()),
        job_id=job,
        tenant=tenant,
        url="http://example.com/",
        from_tier="http",
        to_tier="browser",
        reason="js shell (app-root) with HTTP 200",
        http_status=200,
        marker="app-root",
        created_at=T0,
    )
    for _ in range(2):  # a replayed event
        await writer.execute_many([(INSERT_ESCALATIONS, escalations_params([event, event]))])
    rows = await _rows(
        dsn,
        "SELECT from_tier, to_tier, marker, http_status FROM escalations WHERE job_id = %s",
        job,
    )
    assert rows == [("http", "browser", "app-root", 200)]
