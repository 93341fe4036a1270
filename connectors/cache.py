"""The result cache's store: earlier successful fetches, found in PostgreSQL, read back from
object storage. Implements the workers' ``FetchCache`` port (``streams/cache.py``); the
composition root hands it to them.

The index is the ``jobs`` table itself: the results sink writes each succeeded job's
``cache_key`` (``schemas.cache.cache_key``) and response headers with its row, so the cache
survives restarts, is shared by every worker, and needs no writes of its own. A job answered
from the cache is not a fetch: its row names the job it came from (``cached_from``) and never
answers another job, so a page is never served as fresher than it is.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from connectors.storage import ObjectStore, StorageError
from schemas.cache import CachedFetch, CacheUnavailable

__all__ = ["LOOKUP_SQL", "PgFetchCache"]

log = logging.getLogger(__name__)

LOOKUP_SQL = """
SELECT job_id, tier, url, final_url, http_status, content_type, content_key, content_bytes,
       screenshot_key, response_headers
  FROM jobs
 WHERE cache_key = %(key)s AND status = 'succeeded' AND cached_from IS NULL
   AND finished_at >= now() - make_interval(secs => %(max_age_s)s)
   AND tier = ANY(%(tiers)s) AND (tenant_id = %(tenant)s OR %(shared)s)
 ORDER BY finished_at DESC
 LIMIT 1
"""
# A stored page inflating past this is no page we wrote (bodies are capped far below it).
MAX_PAGE_BYTES = 256 * 1024 * 1024


class PgFetchCache:
    """Lookups on a small connection pool of its own, opened on first use (inside the worker's
    event loop)."""

    def __init__(self, dsn: str, store: ObjectStore, max_connections: int = 4) -> None:
        self._dsn = dsn
        self._store = store
        self._max = max_connections
        self._pool: AsyncConnectionPool | None = None
        self._opening = asyncio.Lock()

    async def _connections(self) -> AsyncConnectionPool:
        async with self._opening:
            if self._pool is None:
                pool = AsyncConnectionPool(
                    self._dsn,
                    min_size=1,
                    max_size=self._max,
                    open=False,
                    kwargs={"autocommit": True, "row_factory": dict_row},
                )
                await pool.open(wait=False)
                self._pool = pool
            return self._pool

    async def lookup(
        self,
        *,
        tenant: str,
        key: str,
        max_age_s: int,
        tiers: Sequence[str],
        shared: bool,
    ) -> CachedFetch | None:
        params = {
            "key": key,
            "max_age_s": max_age_s,
            "tiers": list(tiers),
            "tenant": tenant,
            "shared": shared,
        }
        try:
            pool = await self._connections()
            async with pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(LOOKUP_SQL, params)
                row: dict[str, Any] | None = await cur.fetchone()  # type: ignore[assignment]
            if row is None:
                return None
            page = await self._store.get(row["content_key"])
            shot = await self._store.get(row["screenshot_key"]) if row["screenshot_key"] else None
        except (psycopg.Error, StorageError) as exc:
            raise CacheUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if page is None:
            return None  # the object is gone (a retention policy): a miss
        try:
            body = await asyncio.to_thread(_gunzip, page)
        except (zlib.error, ValueError) as exc:
            log.warning("cached page of job %s is unreadable: %s", row["job_id"], exc)
            return None
        return CachedFetch(
            job_id=row["job_id"],
            tier=row["tier"],
            url=row["url"],
            final_url=row["final_url"] or row["url"],
            status=row["http_status"] or 200,
            content_type=row["content_type"],
            body=body,
            headers=dict(row["response_headers"] or {}),
            screenshot=shot,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


def _gunzip(data: bytes) -> bytes:
    inflate = zlib.decompressobj(wbits=31)
    body = inflate.decompress(data, MAX_PAGE_BYTES)
    if inflate.unconsumed_tail:
        raise ValueError("the stored page inflates past any page we store")
    return body
