"""PostgreSQL access shared by the sinks and the gateway: connections and migrations."""

from __future__ import annotations

import logging
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

_LOCK_ID = 0x5C4A_F1E0  # advisory lock held while migrating


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations (``connectors/migrations/NNNN_*.sql``) in order; idempotent.

    Concurrent callers serialise on an advisory lock. Returns the names applied now.
    """
    files = sorted(
        (
            f
            for f in resources.files("connectors").joinpath("migrations").iterdir()
            if f.name.endswith(".sql")
        ),
        key=lambda f: f.name,
    )
    applied_now: list[str] = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT name FROM schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for f in files:
                if f.name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f.read_text("utf-8"))
                    await conn.execute(
                        "INSERT INTO schema_migrations (name) VALUES (%s)", (f.name,)
                    )
                log.info("applied migration %s", f.name)
                applied_now.append(f.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now
