"""Reading PostgreSQL: the window's jobs and attempts, tenants' credits (``balances``), and
objects' owners."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg

from scrapifie.verify.balances import read_balances
from scrapifie.verify.report import Progress
from scrapifie.verify.state import Attempt, Db, Job, JobRow, TopicScan, VerifyError
from scrapifie.verify.store import owned_keys, parse_object_key

__all__ = ["object_owners", "read_db"]

_JOB_COLUMNS = (
    "tenant_id, job_id, status, tier, http_status, error_code, content_key, content_sha256,"
    " result_event_id, finished_at, created_at, {screenshot_key}, attempts, credits"
)


async def read_db(
    conn: psycopg.AsyncConnection[Any], cutoff: datetime, scan: TopicScan, progress: Progress
) -> Db:
    """Jobs created since ``cutoff`` (and those ``scan`` saw before it), their attempts, and
    every tenant's credits."""
    progress.say("reading jobs and attempts")
    db = Db(cutoff)
    try:
        columns = await _job_columns(conn)
        cur = await conn.execute(
            f"SELECT {columns} FROM jobs WHERE created_at >= %s",  # constant columns
            (cutoff,),
        )
        async for r in cur:
            db.jobs[(r[0], r[1])] = JobRow(*r[2:])
        # Jobs seen on the topics but outside the window (clock edges): look them up too.
        extra = [j for j in scan.requests if j not in db.jobs]
        extra += [j for j in scan.results if j not in db.jobs and j not in extra]
        for chunk in _chunks(extra, 5000):
            cur = await conn.execute(
                f"SELECT {columns} FROM jobs WHERE (tenant_id, job_id) IN"
                " (SELECT * FROM unnest(%s::text[], %s::text[]))",
                ([t for t, _ in chunk], [j for _, j in chunk]),
            )
            async for r in cur:
                db.outside[(r[0], r[1])] = JobRow(*r[2:])
        cur = await conn.execute(
            "SELECT a.event_id, a.tenant_id, a.job_id, a.tier, a.attempt, a.outcome,"
            " a.credits, a.created_at >= %s, a.error_code, a.cache_hit FROM attempts a"
            " WHERE a.created_at >= %s OR EXISTS (SELECT 1 FROM jobs j"
            "  WHERE j.tenant_id = a.tenant_id AND j.job_id = a.job_id"
            "  AND j.created_at >= %s)",
            (cutoff, cutoff, cutoff),
        )
        async for r in cur:
            att = Attempt(
                r[0], r[1], r[2], r[3], int(r[4]), r[5], int(r[6]), bool(r[7]), r[8], bool(r[9])
            )
            db.attempts.append(att)
        progress.say("reading balances, credit ledger and reservations")
        await read_balances(conn, cutoff, db)
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
        raise VerifyError(f"the database is not migrated ({exc}); run `scrapifie migrate`") from exc
    except psycopg.Error as exc:
        raise VerifyError(f"PostgreSQL read failed: {exc}") from exc
    return db


async def object_owners(
    conn: psycopg.AsyncConnection[Any], objects: dict[str, datetime], db: Db
) -> dict[Job, JobRow]:
    """Rows of the jobs named by objects that no succeeded row of the window owns."""
    owned = owned_keys(db.all_rows())
    wanted: list[Job] = []
    for key in objects:
        if key in owned:
            continue
        parsed = parse_object_key(key)
        if parsed is not None:
            wanted.append(parsed[1:])
    rows: dict[Job, JobRow] = {}
    try:
        columns = await _job_columns(conn)
        for chunk in _chunks(wanted, 5000):
            cur = await conn.execute(
                f"SELECT {columns} FROM jobs WHERE (tenant_id, job_id) IN"
                " (SELECT * FROM unnest(%s::text[], %s::text[]))",
                ([t for t, _ in chunk], [j for _, j in chunk]),
            )
            async for r in cur:
                rows[(r[0], r[1])] = JobRow(*r[2:])
    except psycopg.Error as exc:
        raise VerifyError(f"PostgreSQL read failed: {exc}") from exc
    return rows


async def _job_columns(conn: psycopg.AsyncConnection[Any]) -> str:
    shots = await _has_column(conn, "jobs", "screenshot_key")  # since 0003
    return _JOB_COLUMNS.format(screenshot_key="screenshot_key" if shots else "NULL")


async def _has_column(conn: psycopg.AsyncConnection[Any], table: str, column: str) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
        (table, column),
    )
    return await cur.fetchone() is not None


def _chunks(items: list[Job], size: int) -> Iterable[list[Job]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
