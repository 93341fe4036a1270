"""The workers' view of the tenants (``streams.tenants.TenantDirectory``), from PostgreSQL.

Each tenant's state is cached for :data:`TTL_S`: a worker asks at most once per tenant per TTL,
whatever its rate. While PostgreSQL is unreachable, tenants are taken as active (and the last
known state is kept): jobs keep running and are charged when they end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

import psycopg
from psycopg_pool import AsyncConnectionPool

__all__ = ["TTL_S", "PgTenantDirectory"]

log = logging.getLogger(__name__)

TTL_S: Final = 5.0
_SQL = "SELECT enabled FROM tenants WHERE tenant_id = %s"


class PgTenantDirectory:
    def __init__(self, dsn: str, ttl_s: float = TTL_S, timeout_s: float = 1.0) -> None:
        self._dsn = dsn
        self._ttl = ttl_s
        self._timeout = timeout_s
        self._known: dict[str, tuple[str, float]] = {}
        self._pool: AsyncConnectionPool | None = None
        self._opening = asyncio.Lock()

    async def _connections(self) -> AsyncConnectionPool:
        async with self._opening:
            if self._pool is None:
                pool = AsyncConnectionPool(
                    self._dsn, min_size=1, max_size=2, open=False, kwargs={"autocommit": True}
                )
                await pool.open(wait=False)
                self._pool = pool
            return self._pool

    async def state(self, tenant: str) -> Any:
        now = time.monotonic()
        cached = self._known.get(tenant)
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        try:
            async with asyncio.timeout(self._timeout):
                pool = await self._connections()
                async with pool.connection() as conn:
                    cur = await conn.execute(_SQL, (tenant,))
                    row = await cur.fetchone()
        except (psycopg.Error, TimeoutError) as exc:
            log.info("tenant directory unavailable (%s): %s taken as active", exc, tenant)
            return cached[0] if cached is not None else "active"
        state = "unknown" if row is None else ("active" if row[0] else "disabled")
        if len(self._known) > 100_000:
            self._known.clear()
        self._known[tenant] = (state, now)
        return state
