"""Shared helpers of the integration tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from psycopg.rows import dict_row

from schemas.records import FINAL_STATUSES


async def wait_final(
    dsn: str, job_ids: list[str], timeout_s: float = 120
) -> dict[str, dict[str, Any]]:
    """Poll PostgreSQL until every job has a final status; return their rows by job_id."""
    deadline = time.monotonic() + timeout_s
    rows: dict[str, dict[str, Any]] = {}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while True:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute("SELECT * FROM jobs WHERE job_id = ANY(%s)", (job_ids,))
            rows = {r["job_id"]: r for r in await cur.fetchall()}
            if len(rows) == len(job_ids) and all(
                r["status"] in FINAL_STATUSES for r in rows.values()
            ):
                return rows
            if time.monotonic() > deadline:
                pending = [
                    j for j in job_ids if rows.get(j, {}).get("status") not in FINAL_STATUSES
                ]
                raise AssertionError(
                    f"{len(pending)} jobs not final after {timeout_s}s: {pending[:5]}"
                )
            await asyncio.sleep(0.25)
