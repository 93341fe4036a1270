"""Usage and balances against the real PostgreSQL, written by the sinks' own statements:
``read_usage`` (GET /v1/usage, ``scrapifie usage``) by tier, day and error code; replayed
metering and results move neither usage nor balances; ``scrapifie verify``'s credit checks
pass on that data and catch a balance or a reservation damaged by hand.

Each test migrates a schema of its own (search_path in the DSN), so the reconciliation, which
looks at every tenant, sees only this test's."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from connectors.db import migrate
from connectors.gateway.usage import read_usage
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
from schemas.prices import Prices
from schemas.records import Metering, ScrapeRequest, ScrapeResult
from scrapifie import accounts
from scrapifie.local.postgres import LocalPostgres
from scrapifie.settings import Settings
from scrapifie.testing.procstack import base_env
from scrapifie.verify.checks.balances import check_balances, check_settlements
from scrapifie.verify.checks.ledger import check_credits
from scrapifie.verify.postgres import read_db
from scrapifie.verify.report import Check, Progress
from scrapifie.verify.state import Db, KafkaState, TopicScan
from scrapifie.verify.topology import Topology
from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration

DAY1 = datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)  # the last second of a UTC day
DAY2 = datetime(2026, 3, 2, 0, 0, 1, tzinfo=UTC)
PRICES = Prices(
    tiers={"http": 1, "browser": 5, "stealth": 10}, cache_hit=1, robots_refusal=0, failed=2
)


@dataclass
class Env:
    dsn: str
    writer: PgWriter


@pytest.fixture
async def env(postgres: LocalPostgres) -> AsyncIterator[Env]:
    schema = f"usage_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(postgres.dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    dsn = make_conninfo(postgres.dsn, options=f"-csearch_path={schema}")
    await migrate(dsn)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await accounts.create_tenant(conn, "acme", 100)
        await accounts.create_tenant(conn, "other", 50)
        await conn.commit()
        await accounts.credit(conn, "acme", 10)  # a top-up: in the ledger, as the CLI writes it
        await conn.commit()
    writer = PgWriter(dsn)
    try:
        yield Env(dsn, writer)
    finally:
        await writer.close()
        async with await psycopg.AsyncConnection.connect(postgres.dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _meter(
    tenant: str,
    job: str,
    n: int,
    tier: str,
    outcome: str,
    credits: int,
    at: datetime,
    error_code: str | None = None,
    cache_hit: bool = False,
) -> Metering:
    return Metering(
        event_id=f"{tenant}-{job}-{n}",
        job_id=job,
        tenant=tenant,
        tier=tier,
        attempt=n,
        outcome=outcome,
        error_code=error_code,
        bytes=1000 * n if outcome == "ok" else 10,
        duration_ms=5,
        credits=credits,
        cache_hit=cache_hit,
        created_at=at,
    )


def _result(
    tenant: str, job: str, tier: str, attempts: int, credits: int, error: str | None, at: datetime
) -> StoredResult:
    ok = error is None
    result = ScrapeResult(
        event_id=f"{tenant}-{job}-result",
        job_id=job,
        tenant=tenant,
        url=f"http://example.test/{job}",
        status="succeeded" if ok else "failed",
        tier=tier,
        attempts=attempts,
        http_status=200 if ok else None,
        error_code=error,
        error_message=None if ok else error,
        content_sha256="ab" * 32 if ok else None,
        credits=credits,
        trace_id="t",
        created_at=at,
        finished_at=at + timedelta(seconds=1),
    )
    key = f"content/{tenant}/{job}" if ok else None
    return StoredResult(result, key, None)


# Jobs A-D of acme and E of other end; F of acme is accepted and still queued.
METERING = [
    _meter("acme", "A", 1, "http", "transient", 0, DAY1, "timeout"),  # retried
    _meter("acme", "A", 2, "http", "blocked", 0, DAY1, "blocked"),  # escalated
    _meter("acme", "A", 3, "browser", "ok", 5, DAY1),
    _meter("acme", "B", 1, "http", "ok", 1, DAY1, cache_hit=True),
    _meter("acme", "C", 1, "http", "fatal", 0, DAY2, "robots_disallowed"),
    _meter("acme", "D", 1, "http", "transient", 0, DAY2, "timeout"),
    _meter("acme", "D", 2, "http", "transient", 2, DAY2, "timeout"),  # the last: failed
    _meter("other", "E", 1, "http", "ok", 1, DAY2),
]
RESULTS = [
    _result("acme", "A", "browser", 3, 5, None, DAY1),
    _result("acme", "B", "http", 1, 1, None, DAY1),
    _result("acme", "C", "http", 1, 0, "robots_disallowed", DAY2),
    _result("acme", "D", "http", 2, 2, "timeout", DAY2),
    _result("other", "E", "http", 1, 1, None, DAY2),
]
RESERVED = {
    ("acme", "A"): 10,
    ("acme", "B"): 1,
    ("acme", "C"): 1,
    ("acme", "D"): 1,
    ("other", "E"): 1,
    ("acme", "F"): 1,
}


async def _reserve(dsn: str) -> None:
    """What the gateway's admission does per accepted job: a reservation row and the tenant's
    reserved/open_jobs, in one transaction; F also gets its queued row."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        for (tenant, job), amount in RESERVED.items():
            await conn.execute(
                "INSERT INTO reservations (tenant_id, job_id, amount, created_at)"
                " VALUES (%s, %s, %s, %s)",
                (tenant, job, amount, DAY1 - timedelta(minutes=1)),
            )
            await conn.execute(
                "UPDATE tenants SET reserved = reserved + %s, open_jobs = open_jobs + 1"
                " WHERE tenant_id = %s",
                (amount, tenant),
            )
        await conn.commit()
    queued = ScrapeRequest(
        job_id="F",
        tenant="acme",
        url="http://example.test/F",
        tier="http",
        trace_id="t",
        created_at=DAY2,
    )
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await conn.execute(INSERT_QUEUED, queued_params([queued])[0])
        await conn.commit()


async def _deliver(
    writer: PgWriter, metering: Sequence[Metering], results: Sequence[StoredResult]
) -> None:
    """The ledger sink's write, then the results sink's (its statements, in its order)."""
    await writer.execute_many([(INSERT_ATTEMPTS, attempts_params(metering))])
    await writer.execute_many(
        [(UPSERT_RESULTS, results_params(results)), (SETTLE, settle_params(results))]
    )


async def _usage(dsn: str, tenant: str = "acme", **query: Any) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return await read_usage(conn, tenant, **query)


async def _reconcile(dsn: str) -> tuple[Check, Check, Check]:
    """verify's credits, balances and settlements checks on this schema (no Kafka: nothing is
    in flight)."""
    topo = Topology.from_settings(Settings())
    kafka = KafkaState(groups=set(), committed={}, ends={}, scan=TopicScan())
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        db: Db = await read_db(conn, datetime(2026, 1, 1, tzinfo=UTC), kafka.scan, Progress())
    return (
        check_credits(PRICES, db, metering_lag=0),
        check_balances(db),
        check_settlements(topo, kafka, db),
    )


def _ok(*checks: Check) -> None:
    for c in checks:
        assert c.status == "ok", (c.name, c.examples)


async def test_usage_by_tier_day_and_error_code(env: Env) -> None:
    await _reserve(env.dsn)
    await _deliver(env.writer, METERING, RESULTS)

    total = await _usage(env.dsn)
    # 110 granted and topped up, 5 + 1 + 0 + 2 charged; F still holds 1.
    assert {
        k: total[k]
        for k in (
            "tenant",
            "credits_remaining",
            "credits_balance",
            "credits_reserved",
            "open_jobs",
            "attempts",
            "succeeded",
            "credits_used",
            "from",
            "to",
            "group_by",
            "rows",
        )
    } == {
        "tenant": "acme",
        "credits_remaining": 101,
        "credits_balance": 102,
        "credits_reserved": 1,
        "open_jobs": 1,
        "attempts": 7,
        "succeeded": 2,
        "credits_used": 8,
        "from": None,
        "to": None,
        "group_by": None,
        "rows": [],
    }
    assert total["bytes"] == 10 * 5 + 3000 + 1000

    tiers = await _usage(env.dsn, group_by="tier")
    assert [(r["tier"], r["attempts"], r["succeeded"], r["credits"]) for r in tiers["rows"]] == [
        ("http", 6, 1, 3),
        ("browser", 1, 1, 5),
    ]
    days = await _usage(env.dsn, group_by="day")
    assert [(r["day"], r["attempts"], r["credits"]) for r in days["rows"]] == [
        ("2026-03-01", 4, 6),
        ("2026-03-02", 3, 2),
    ]
    codes = await _usage(env.dsn, group_by="error_code")
    assert [(r["error_code"], r["attempts"], r["credits"]) for r in codes["rows"]] == [
        ("timeout", 3, 2),
        ("blocked", 1, 0),
        ("robots_disallowed", 1, 0),
        (None, 2, 6),
    ]
    one_day = await _usage(env.dsn, start=date(2026, 3, 2), end=date(2026, 3, 2), group_by="tier")
    assert (one_day["from"], one_day["to"], one_day["attempts"], one_day["credits_used"]) == (
        "2026-03-02",
        "2026-03-02",
        3,
        2,
    )
    assert one_day["rows"] == [
        {"tier": "http", "attempts": 3, "succeeded": 0, "credits": 2, "bytes": 30}
    ]
    before = await _usage(env.dsn, end=date(2026, 2, 28))
    assert (before["attempts"], before["credits_used"], before["credits_balance"]) == (0, 0, 102)
    other = await _usage(env.dsn, "other")
    assert (other["attempts"], other["credits_used"], other["credits_remaining"]) == (1, 1, 49)
    json.dumps(total), json.dumps(days)  # JSON-ready as it is

    # Replays: every metering event again (twice in one batch) and every result again.
    await _deliver(env.writer, [*METERING, *METERING[:3]], RESULTS)
    await _deliver(env.writer, METERING[3:], RESULTS[:2])
    assert await _usage(env.dsn) == total
    assert await _usage(env.dsn, group_by="error_code") == codes
    assert (await _usage(env.dsn, "other"))["credits_balance"] == 49

    # The command line reads the same, with the same parameters.
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "scrapifie", "usage", "acme", "--group-by", "day", "--json"],
        env={**base_env(), "SCRAPIFIE_POSTGRES__DSN": env.dsn},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == days


async def test_reconciliation_passes_then_catches_damage(env: Env) -> None:
    await _reserve(env.dsn)
    await _deliver(env.writer, METERING, RESULTS)
    await _deliver(env.writer, METERING, RESULTS)  # replayed: still coherent
    credits, balances, settlements = await _reconcile(env.dsn)
    _ok(credits, balances, settlements)
    assert (credits.checked, balances.checked, settlements.checked) == (5, 2, 6)

    # A balance moved without a ledger row.
    async with await psycopg.AsyncConnection.connect(env.dsn, autocommit=True) as conn:
        await conn.execute("UPDATE tenants SET credits = credits + 7 WHERE tenant_id = 'acme'")
    credits, balances, settlements = await _reconcile(env.dsn)
    _ok(credits, settlements)
    assert balances.broken == 1, balances.examples
    assert (
        "acme: credits 109, but its credit_ledger sums to 102 (+7 unrecorded)"
        in (balances.examples["broken"][0])
    )

    # A finished job's reservation held again (as if SETTLE had not released it), and its
    # charge row lost.
    async with await psycopg.AsyncConnection.connect(env.dsn, autocommit=True) as conn:
        await conn.execute("UPDATE tenants SET credits = credits - 7 WHERE tenant_id = 'acme'")
        await conn.execute(
            "UPDATE reservations SET released_at = NULL WHERE (tenant_id, job_id) = ('acme', 'A')"
        )
        await conn.execute("DELETE FROM credit_ledger WHERE tenant_id = 'other' AND job_id = 'E'")
    credits, balances, settlements = await _reconcile(env.dsn)
    _ok(credits)
    broken = " | ".join(balances.examples["broken"])
    assert "acme: reserved 1, but unreleased reservations hold 11" in broken
    assert "open_jobs 1, but 2 reservations are unreleased" in broken
    assert "other: credits 49, but its credit_ledger sums to 50" in broken
    broken = " | ".join(settlements.examples["broken"])
    assert settlements.broken == 2, broken
    assert "acme/A: 10 credits reserved at" in broken and "though the job succeeded" in broken
    assert "other/E: charged 1 credits, but its 'charge' rows are [] (expected [-1])" in broken
