"""PostgreSQL writes of the sinks. Every statement is idempotent (keyed by job_id or event_id)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg

log = logging.getLogger(__name__)

FINAL = ("succeeded", "failed")

UPSERT_RESULT = """
INSERT INTO jobs (job_id, tenant_id, url, status, tier, attempts, http_status, error_code,
                  error_message, final_url, content_type, content_bytes, content_sha256,
                  content_key, screenshot_key, result_event_id, trace_id, created_at,
                  finished_at, updated_at)
VALUES (%(job_id)s, %(tenant)s, %(url)s, %(status)s, %(tier)s, %(attempts)s, %(http_status)s,
        %(error_code)s, %(error_message)s, %(final_url)s, %(content_type)s, %(content_bytes)s,
        %(content_sha256)s, %(content_key)s, %(screenshot_key)s, %(event_id)s, %(trace_id)s,
        %(created_at)s,
        %(finished_at)s, now())
ON CONFLICT (tenant_id, job_id) DO UPDATE SET
    status = EXCLUDED.status, tier = EXCLUDED.tier, attempts = EXCLUDED.attempts,
    http_status = EXCLUDED.http_status, error_code = EXCLUDED.error_code,
    error_message = EXCLUDED.error_message, final_url = EXCLUDED.final_url,
    content_type = EXCLUDED.content_type, content_bytes = EXCLUDED.content_bytes,
    content_sha256 = EXCLUDED.content_sha256, content_key = EXCLUDED.content_key,
    screenshot_key = EXCLUDED.screenshot_key,
    result_event_id = EXCLUDED.result_event_id, finished_at = EXCLUDED.finished_at,
    updated_at = now()
WHERE jobs.status NOT IN ('succeeded', 'failed')
"""

# A job is seen on scrape.requests (tier auto), then on the tier topic the router chose: the
# second sighting only adds the router's reason; nothing here ever touches a final row.
INSERT_QUEUED = """
INSERT INTO jobs (job_id, tenant_id, url, status, requested_tier, trace_id, created_at,
                  router_reason)
VALUES (%(job_id)s, %(tenant)s, %(url)s, 'queued', %(tier)s, %(trace_id)s, %(created_at)s,
        %(router_reason)s)
ON CONFLICT (tenant_id, job_id) DO UPDATE SET router_reason = EXCLUDED.router_reason
WHERE EXCLUDED.router_reason IS NOT NULL AND jobs.router_reason IS NULL
"""

# One statement per batch: the rows arrive as arrays, credits move only for attempt rows that
# are new (a replayed metering event charges once), summed per tenant so that a batch updates
# each tenant row once instead of once per event.
INSERT_ATTEMPTS = """
WITH ins AS (
    INSERT INTO attempts (event_id, job_id, tenant_id, tier, attempt, outcome, error_code,
                          http_status, bytes, duration_ms, credits, created_at)
    SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::text[],
                         %s::text[], %s::int[], %s::bigint[], %s::int[], %s::int[],
                         %s::timestamptz[])
    ON CONFLICT (event_id) DO NOTHING
    RETURNING tenant_id, credits
), charged AS (
    SELECT tenant_id, sum(credits) AS credits FROM ins GROUP BY tenant_id
)
UPDATE tenants SET credits = tenants.credits - charged.credits
FROM charged WHERE tenants.tenant_id = charged.tenant_id AND charged.credits <> 0
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
    "created_at",
)


def attempts_params(rows: Sequence[dict[str, Any]]) -> list[list[list[Any]]]:
    """INSERT_ATTEMPTS' parameters: one set of column arrays (none for an empty batch)."""
    if not rows:
        return []
    return [[[r[c] for r in rows] for c in _ATTEMPT_COLUMNS]]


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
                " WHERE (tenant_id, job_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
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
                for sql, rows in statements:
                    if rows:
                        await cur.executemany(sql, rows)
        except BaseException:
            await self._reset()
            raise

    async def _reset(self) -> None:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            await self.close()
