"""Reading the credits: tenants' balances beside their ledger and reservations, the charge rows
of the window's final jobs, and the reservations still held.

Every read here is of one snapshot (a REPEATABLE READ transaction): the results sink charges a
job, releases its reservation and moves the tenant's balances in one transaction, and the
gateway reserves and moves them in another, so within one snapshot the sums must match exactly
and no lag excuses a difference.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from schemas.records import FINAL_STATUSES
from scrapifie.verify.state import Balance, Db, OpenReservation, Settlement

__all__ = ["read_balances"]

_FINAL = sorted(str(s) for s in FINAL_STATUSES)

_BALANCES = """
SELECT t.tenant_id, t.credits, t.reserved, t.open_jobs, coalesce(l.total, 0),
       coalesce(r.amount, 0), coalesce(r.n, 0), coalesce(u.credits, 0)
  FROM tenants t
  LEFT JOIN (SELECT tenant_id, sum(delta) AS total FROM credit_ledger GROUP BY 1) l
         USING (tenant_id)
  LEFT JOIN (SELECT tenant_id, sum(amount) AS amount, count(*) AS n FROM reservations
              WHERE released_at IS NULL GROUP BY 1) r USING (tenant_id)
  LEFT JOIN (SELECT tenant_id, sum(credits) AS credits FROM usage_daily GROUP BY 1) u
         USING (tenant_id)
 ORDER BY 1
"""

# The window's final jobs that carry a charge (NULL: written before 0008) and their charge rows.
_SETTLED = """
SELECT j.tenant_id, j.job_id, EXISTS (SELECT 1 FROM tenants t WHERE t.tenant_id = j.tenant_id),
       j.credits, coalesce(array_agg(l.delta) FILTER (WHERE l.id IS NOT NULL), '{}')
  FROM jobs j
  LEFT JOIN credit_ledger l
         ON l.tenant_id = j.tenant_id AND l.job_id = j.job_id AND l.reason = 'charge'
 WHERE j.created_at >= %s AND j.status = ANY(%s) AND j.credits IS NOT NULL
 GROUP BY j.tenant_id, j.job_id, j.credits
"""

# Charge rows of the window for jobs that are not final (or have no row): SETTLE charges a job
# in the transaction that writes its final row, so there should be none.
_STRAY = """
SELECT l.tenant_id, l.job_id, l.delta, j.status
  FROM credit_ledger l
  LEFT JOIN jobs j ON j.tenant_id = l.tenant_id AND j.job_id = l.job_id
 WHERE l.reason = 'charge' AND l.created_at >= %s
   AND (j.status IS NULL OR NOT j.status = ANY(%s))
"""

_OPEN = """
SELECT r.tenant_id, r.job_id, r.amount, r.created_at, j.status, j.finished_at
  FROM reservations r
  LEFT JOIN jobs j ON j.tenant_id = r.tenant_id AND j.job_id = r.job_id
 WHERE r.released_at IS NULL
"""


async def read_balances(conn: psycopg.AsyncConnection[Any], cutoff: datetime, db: Db) -> None:
    """Fill ``db``'s balances, settlements, stray charges and open reservations, from one
    snapshot. ``conn`` is in autocommit mode. psycopg errors pass through."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur = await conn.execute(_BALANCES)
        db.balances = {r[0]: Balance(*map(int, r[1:])) for r in await cur.fetchall()}
        cur = await conn.execute(_SETTLED, (cutoff, _FINAL))
        async for r in cur:
            db.settled[(r[0], r[1])] = Settlement(bool(r[2]), int(r[3]), tuple(map(int, r[4])))
        cur = await conn.execute(_STRAY, (cutoff, _FINAL))
        async for r in cur:
            db.stray_charges[(r[0], r[1])] = (int(r[2]), r[3])
        cur = await conn.execute(_OPEN)
        async for r in cur:
            db.open_reservations[(r[0], r[1])] = OpenReservation(int(r[2]), r[3], r[4], r[5])
