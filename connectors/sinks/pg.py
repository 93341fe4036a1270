"""PostgreSQL writes of the sinks. Every statement is idempotent (keyed by job_id or event_id)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Any

import psycopg

from schemas.records import Escalation, Metering, ScrapeRequest, ScrapeResult
from schemas.text import storable

log = logging.getLogger(__name__)

# Every batch statement takes its rows as column arrays (unnest): one statement and one plan per
# batch instead of one per row, and the arrays go over in binary (%b), which psycopg dumps ~10x
# faster than text arrays. Rows are sorted by key so that two sinks updating the same job rows
# take their locks in the same order.

UPSERT_RESULTS = """
INSERT INTO jobs (job_id, tenant_id, url, status, tier, attempts, http_status, error_code,
                  error_message, final_url, content_type, content_bytes, content_sha256,
                  content_key, screenshot_key, documents, cache_key, cached_from,
                  response_headers, credits, result_event_id, trace_id, created_at, finished_at,
                  updated_at)
SELECT j, t, u, s, ti, a, hs, ec, em, fu, ct, cb, cs, ck, sk, d::jsonb, ky, cf, rh::jsonb, cr, e,
       tr, c, f, now()
FROM unnest(
    %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::int[], %b::int[], %b::text[],
    %b::text[], %b::text[], %b::text[], %b::bigint[], %b::text[], %b::text[], %b::text[],
    %b::text[], %b::text[], %b::text[], %b::text[], %b::int[], %b::text[], %b::text[],
    %b::timestamptz[], %b::timestamptz[])
    AS x(j, t, u, s, ti, a, hs, ec, em, fu, ct, cb, cs, ck, sk, d, ky, cf, rh, cr, e, tr, c, f)
ON CONFLICT (tenant_id, job_id) DO UPDATE SET
    status = EXCLUDED.status, tier = EXCLUDED.tier, attempts = EXCLUDED.attempts,
    http_status = EXCLUDED.http_status, error_code = EXCLUDED.error_code,
    error_message = EXCLUDED.error_message, final_url = EXCLUDED.final_url,
    content_type = EXCLUDED.content_type, content_bytes = EXCLUDED.content_bytes,
    content_sha256 = EXCLUDED.content_sha256, content_key = EXCLUDED.content_key,
    screenshot_key = EXCLUDED.screenshot_key, documents = EXCLUDED.documents,
    cache_key = EXCLUDED.cache_key, cached_from = EXCLUDED.cached_from,
    response_headers = EXCLUDED.response_headers, credits = EXCLUDED.credits,
    result_event_id = EXCLUDED.result_event_id, finished_at = EXCLUDED.finished_at,
    updated_at = now()
WHERE jobs.status NOT IN ('succeeded', 'failed')
"""

_RESULT_COLUMNS = (
    "job_id",
    "tenant",
    "url",
    "status",
    "tier",
    "attempts",
    "http_status",
    "error_code",
    "error_message",
    "final_url",
    "content_type",
    "content_bytes",
    "content_sha256",
    "content_key",
    "screenshot_key",
    "documents",
    "cache_key",
    "cached_from",
    "response_headers",
    "credits",
    "event_id",
    "trace_id",
    "created_at",
    "finished_at",
)

# Wakes the gateway's ?wait= requests (connectors/gateway/waiters.py) when their jobs turn final.
# Sent in the results transaction, so it is delivered on commit, never before the row is
# visible. One notification per chunk of ids: a payload holds at most 8000 bytes, and 150 ids of 36
# characters plus commas take 5,550.
JOBS_FINAL_CHANNEL = "scrapifie_jobs_final"
NOTIFY_CHUNK = 150
NOTIFY_FINAL = f"""
SELECT pg_notify(%s, string_agg(j, ',')) FROM (
    SELECT j, (row_number() OVER () - 1) / {NOTIFY_CHUNK} AS chunk FROM unnest(%b::text[]) AS x(j)
) ids GROUP BY chunk
"""
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# A job is seen on scrape.requests (tier auto), then on the tier topic the router chose: the
# second sighting only adds the router's reason; nothing here ever touches a final row.
INSERT_QUEUED = """
INSERT INTO jobs (job_id, tenant_id, url, status, requested_tier, trace_id, created_at,
                  router_reason)
SELECT j, t, u, 'queued', rt, tr, c, rr FROM unnest(
    %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::timestamptz[], %b::text[])
    AS x(j, t, u, rt, tr, c, rr)
ON CONFLICT (tenant_id, job_id) DO UPDATE SET router_reason = EXCLUDED.router_reason
WHERE EXCLUDED.router_reason IS NOT NULL AND jobs.router_reason IS NULL
"""

_QUEUED_COLUMNS = ("job_id", "tenant", "url", "tier", "trace_id", "created_at", "router_reason")

# Usage rollups move only for attempt rows that are new (a replayed metering event adds
# nothing). Balances are not touched here: a job is charged once, when its final result is
# written (SETTLE, in the results sink's transaction).
INSERT_ATTEMPTS = """
WITH ins AS (
    INSERT INTO attempts (event_id, job_id, tenant_id, tier, attempt, outcome, error_code,
                          http_status, bytes, duration_ms, credits, egress_pool, cache_hit,
                          created_at)
    SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::int[], %b::text[],
                         %b::text[], %b::int[], %b::bigint[], %b::int[], %b::int[], %b::text[],
                         %b::bool[], %b::timestamptz[])
    ON CONFLICT (event_id) DO NOTHING
    RETURNING tenant_id, created_at, tier, outcome, error_code, credits, bytes
)
INSERT INTO usage_daily AS u (tenant_id, day, tier, outcome, error_code, attempts, credits, bytes)
SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, tier, outcome, coalesce(error_code, ''),
       count(*), sum(credits), sum(bytes)
  FROM ins GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (tenant_id, day, tier, outcome, error_code) DO UPDATE SET
    attempts = u.attempts + EXCLUDED.attempts, credits = u.credits + EXCLUDED.credits,
    bytes = u.bytes + EXCLUDED.bytes
"""

_ATTEMPT_COLUMNS = (
    "event_id",
    "job_id",
    "tenant",
    "tier",
    "attempt",
    "outcome",
    "error_code",
    "http_status",
    "bytes",
    "duration_ms",
    "credits",
    "egress_pool",
    "cache_hit",
    "created_at",
)

Params = list[list[list[Any]]]
# UPSERT_RESULTS' columns as attributes of a StoredResult.
_STORED_KEYS = ("content_key", "screenshot_key", "documents", "response_headers")
_STORED_RESULT_COLUMNS = tuple(c if c in _STORED_KEYS else f"result.{c}" for c in _RESULT_COLUMNS)


def _columns(rows: Sequence[Any], columns: Sequence[str]) -> Params:
    """One parameter set of column arrays (none for an empty batch): each row's attributes
    named by ``columns`` (dotted paths allowed). Strings are made storable (PostgreSQL text
    refuses NUL, which producers and websites may send); the check is inline because it runs
    for every value of every row (a call per value cost the sink ~20% more CPU per event)."""
    if not rows:
        return []
    values = zip(*map(attrgetter(*columns), rows), strict=True)
    return [
        [
            [
                v if type(v) is not str or (v.isascii() and "\x00" not in v) else storable(v)
                for v in column
            ]
            for column in values
        ]
    ]


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A final result with the names of the objects its content and screenshot went to, and
    its derived documents' manifest (JSON: format, media type, size, object key)."""

    result: ScrapeResult
    content_key: str | None
    screenshot_key: str | None
    documents: str | None = None
    response_headers: str | None = None  # JSON; kept for the result cache (fetches only)


def results_params(rows: Sequence[StoredResult]) -> Params:
    """UPSERT_RESULTS' parameters. One row per (tenant, job_id): a statement may not update
    the same row twice, and the caller keeps only the first final result of a job."""
    by_job = {(r.result.tenant, r.result.job_id): r for r in reversed(rows)}
    return _columns([by_job[k] for k in sorted(by_job)], _STORED_RESULT_COLUMNS)


def queued_params(rows: Sequence[ScrapeRequest]) -> Params:
    """INSERT_QUEUED's parameters. A job seen twice in one batch becomes one row with its first
    sighting's fields and the first router reason seen, as two statements in order would."""
    by_job: dict[tuple[str, str], ScrapeRequest] = {}
    for r in rows:
        key = (r.tenant, r.job_id)
        seen = by_job.get(key)
        if seen is None:
            by_job[key] = r
        elif seen.router_reason is None and r.router_reason is not None:
            by_job[key] = replace(seen, router_reason=r.router_reason)
    return _columns([by_job[k] for k in sorted(by_job)], _QUEUED_COLUMNS)


def attempts_params(rows: Sequence[Metering]) -> Params:
    """INSERT_ATTEMPTS' parameters (event ids are unique; a repeat is skipped by the insert)."""
    by_event = {r.event_id: r for r in reversed(rows)}
    return _columns([by_event[k] for k in sorted(by_event)], _ATTEMPT_COLUMNS)


def notify_params(job_ids: Iterable[str]) -> list[list[Any]]:
    """NOTIFY_FINAL's parameters (none when no id qualifies). Only canonical UUIDs are sent:
    they are the only ids the gateway waits for, and nothing longer can overflow a payload."""
    ids = sorted({j for j in job_ids if _CANONICAL_UUID.fullmatch(j)})
    if not ids:
        return []
    return [[JOBS_FINAL_CHANNEL, ids]]


# A job's charge and the release of its reservation, once per job however often its final
# result is delivered: the charge is a credit_ledger row (unique per job), the release flips
# released_at; the balance moves by exactly what those two did. Unknown tenants have nothing
# to charge. Runs in the results sink's transaction, after UPSERT_RESULTS.
SETTLE = """
WITH fin (tenant_id, job_id, credits) AS (
    SELECT * FROM unnest(%b::text[], %b::text[], %b::bigint[])
), charged AS (
    INSERT INTO credit_ledger (tenant_id, delta, reason, job_id)
    SELECT f.tenant_id, -f.credits, 'charge', f.job_id
      FROM fin f JOIN tenants t ON t.tenant_id = f.tenant_id
     WHERE f.credits <> 0
    ON CONFLICT (tenant_id, job_id, reason) WHERE job_id IS NOT NULL DO NOTHING
    RETURNING tenant_id, delta
), released AS (
    UPDATE reservations r SET released_at = now()
      FROM fin f
     WHERE r.tenant_id = f.tenant_id AND r.job_id = f.job_id AND r.released_at IS NULL
    RETURNING r.tenant_id, r.amount
), moves AS (
    SELECT tenant_id, delta, 0::bigint AS amount, 0 AS n FROM charged
    UNION ALL
    SELECT tenant_id, 0, amount, 1 FROM released
), per AS (
    SELECT tenant_id, sum(delta) AS delta, sum(amount) AS amount, sum(n) AS n
      FROM moves GROUP BY tenant_id
)
UPDATE tenants t
   SET credits = t.credits + per.delta, reserved = t.reserved - per.amount,
       open_jobs = t.open_jobs - per.n
  FROM per WHERE t.tenant_id = per.tenant_id
"""


def settle_params(rows: Sequence[StoredResult]) -> Params:
    """SETTLE's parameters: each job once, in key order (lock order across sinks)."""
    by_job = {(r.result.tenant, r.result.job_id): r.result.credits for r in rows}
    if not by_job:
        return []
    keys = sorted(by_job)
    return [[[t for t, _ in keys], [j for _, j in keys], [by_job[k] for k in keys]]]


INSERT_ESCALATIONS = """
INSERT INTO escalations (event_id, job_id, tenant_id, from_tier, to_tier, reason, http_status,
                         marker, created_at)
SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
                     %b::int[], %b::text[], %b::timestamptz[])
ON CONFLICT (event_id) DO NOTHING
"""

_ESCALATION_COLUMNS = (
    "event_id",
    "job_id",
    "tenant",
    "from_tier",
    "to_tier",
    "reason",
    "http_status",
    "marker",
    "created_at",
)


def escalations_params(rows: Sequence[Escalation]) -> Params:
    """INSERT_ESCALATIONS' parameters (one row per event id, in key order)."""
    by_event = {r.event_id: r for r in reversed(rows)}
    return _columns([by_event[k] for k in sorted(by_event)], _ESCALATION_COLUMNS)


class PgWriter:
    """One connection, reopened after failures. Not shared between tasks."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                await self._conn.close()
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, connect_timeout=5)
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def final_jobs(self, jobs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (tenant, job_id) pairs already have a final status."""
        conn = await self._connection()
        try:
            cur = await conn.execute(
                "SELECT tenant_id, job_id FROM jobs"
                " WHERE (tenant_id, job_id) IN (SELECT * FROM unnest(%b::text[], %b::text[]))"
                " AND status IN ('succeeded', 'failed')",
                ([t for t, _ in jobs], [j for _, j in jobs]),
            )
            rows = await cur.fetchall()
            await conn.commit()
        except BaseException:
            await self._reset()
            raise
        return {(r[0], r[1]) for r in rows}

    async def execute_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run every (sql, parameter sets) pair in one transaction."""
        conn = await self._connection()
        try:
            async with conn.transaction(), conn.cursor() as cur:
                for sql, param_sets in statements:
                    for params in param_sets:  # batch statements have one set (or none)
                        await cur.execute(sql, params)
        except BaseException:
            await self._reset()
            raise

    async def _reset(self) -> None:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            await self.close()
