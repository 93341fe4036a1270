"""Admission: what a tenant may submit, decided in PostgreSQL so that every gateway replica
sees the same state.

One transaction per submission (a job or a batch, all or nothing) holds the tenant's row
(``SELECT … FOR UPDATE``), so concurrent submits from any number of gateways are serialised
per tenant and the checks below cannot both pass on the same credits:

1. **Rate**: a token bucket in the tenant row (``rate_tokens``, ``rate_at``), refilled at
   ``rate_per_s`` (the tenant's, else the deployment's) up to one second's worth: empty → 429
   ``rate_limited`` with ``Retry-After``.
2. **Concurrency**: ``open_jobs`` (accepted, not ended) plus the new jobs must stay within
   ``max_jobs`` → else 429 ``too_many_jobs``. This is also what bounds how long one tenant's
   backlog can hold another's jobs (README, "Fairness").
3. **Credits**: each job reserves what it may cost — the price of the highest tier it may reach,
   at most its ``max_credits``, at most what is left — and at least its starting tier's price,
   else 402 ``insufficient_credits``. ``credits - reserved`` never goes below zero; the job
   carries its reservation (``ScrapeRequest.budget``) and a tier costing more is not tried. The
   results sink releases the reservation and charges the job when it ends (``SETTLE``).

A job id submitted again (a retry after a timeout) reserves nothing more. Reservations of jobs
that never reached Kafka (the gateway died between commit and publish) are released by
:func:`release_unpublished` after :data:`ORPHAN_AFTER`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from psycopg import AsyncConnection

from connectors.gateway.api import ApiError
from schemas.prices import Prices
from schemas.records import AUTO, ScrapeRequest
from schemas.topics import TIER_ORDER

__all__ = [
    "ORPHAN_AFTER",
    "Admission",
    "AdmissionLimits",
    "admit",
    "release",
    "release_unpublished",
]

ORPHAN_AFTER: Final = "1 hour"  # a reservation whose job has no row after this never ran

_TENANT = """
SELECT credits, reserved, open_jobs, max_jobs, rate_per_s, rate_tokens,
       extract(epoch FROM clock_timestamp() - coalesce(rate_at, clock_timestamp())) AS idle_s
  FROM tenants WHERE tenant_id = %s FOR UPDATE
"""
_KNOWN = """
SELECT job_id, amount FROM reservations WHERE tenant_id = %s AND job_id = ANY(%s)
"""
_RESERVE = """
INSERT INTO reservations (tenant_id, job_id, amount)
SELECT %s, j, a FROM unnest(%s::text[], %s::bigint[]) AS x(j, a)
ON CONFLICT (tenant_id, job_id) DO NOTHING
"""
_UPDATE = """
UPDATE tenants SET reserved = reserved + %s, open_jobs = open_jobs + %s, rate_tokens = %s,
                   rate_at = clock_timestamp()
 WHERE tenant_id = %s
"""
_SPEND_TOKEN = """
UPDATE tenants SET rate_tokens = %s, rate_at = clock_timestamp() WHERE tenant_id = %s
"""
_RELEASE = """
WITH gone AS (
    DELETE FROM reservations
     WHERE tenant_id = %s AND job_id = ANY(%s) AND released_at IS NULL
    RETURNING amount
)
UPDATE tenants SET reserved = reserved - (SELECT coalesce(sum(amount), 0) FROM gone),
                   open_jobs = open_jobs - (SELECT count(*) FROM gone)
 WHERE tenant_id = %s
"""
_ORPHANS = f"""
WITH gone AS (
    UPDATE reservations r SET released_at = now()
     WHERE r.tenant_id = %s AND r.released_at IS NULL
       AND r.created_at < now() - interval '{ORPHAN_AFTER}'
       AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.tenant_id = r.tenant_id
                                               AND j.job_id = r.job_id)
    RETURNING r.amount
)
UPDATE tenants SET reserved = reserved - (SELECT coalesce(sum(amount), 0) FROM gone),
                   open_jobs = open_jobs - (SELECT count(*) FROM gone)
 WHERE tenant_id = %s AND EXISTS (SELECT 1 FROM gone)
"""


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """The deployment's defaults; a tenant's own ``rate_per_s``/``max_jobs`` override them."""

    rate_per_s: float
    max_jobs: int
    prices: Prices


@dataclass(frozen=True, slots=True)
class Admission:
    reserved: int  # credits reserved by this submission
    remaining: int  # credits left to reserve (credits - reserved) after it
    new_ids: list[str]  # jobs that reserved now (not submitted before)


def _needed(jobs: list[ScrapeRequest], prices: Prices) -> int:
    return sum(prices.tier(_starting_tier(j)) for j in jobs)


def _starting_tier(job: ScrapeRequest) -> str:
    return TIER_ORDER[0].value if job.tier == AUTO else job.tier


async def admit(
    conn: AsyncConnection[Any], tenant: str, jobs: list[ScrapeRequest], limits: AdmissionLimits
) -> Admission:
    """Check and reserve for ``jobs`` in one transaction; sets each job's ``budget``. Raises
    :class:`ApiError` (402, 429, 400) and leaves nothing reserved when it does."""
    prices = limits.prices
    for job in jobs:
        start = prices.tier(_starting_tier(job))
        cap = job.options.max_credits
        if cap is not None and cap < start:
            raise ApiError(
                400,
                "invalid_request",
                f"options.max_credits ({cap}) is below the {_starting_tier(job)} tier's price"
                f" ({start}): the job could never run",
            )
    async with conn.transaction():
        await conn.execute(_ORPHANS, (tenant, tenant))
        cur = await conn.execute(_TENANT, (tenant,))
        row = await cur.fetchone()
        if row is None:
            raise ApiError(401, "unauthorized", "unknown tenant")
        credits, reserved, open_jobs, max_jobs, rate, tokens, idle_s = row
        rate = float(rate or limits.rate_per_s)
        burst = max(1.0, rate)
        tokens = burst if tokens is None else min(burst, float(tokens) + float(idle_s) * rate)
        if tokens < 1.0:
            wait = math.ceil((1.0 - tokens) / rate)
            raise ApiError(
                429,
                "rate_limited",
                f"more than {rate:g} submissions per second; retry after {wait} s",
                {"Retry-After": str(wait)},
            )
        tokens -= 1.0
        cur = await conn.execute(_KNOWN, (tenant, [j.job_id for j in jobs]))
        known = {job_id: int(amount) for job_id, amount in await cur.fetchall()}
        new = [j for j in jobs if j.job_id not in known]
        cap_jobs = int(max_jobs or limits.max_jobs)
        if open_jobs + len(new) > cap_jobs:
            await conn.execute(_SPEND_TOKEN, (tokens, tenant))
            raise ApiError(
                429,
                "too_many_jobs",
                f"{open_jobs} jobs queued or running, {len(new)} more would pass this account's"
                f" limit of {cap_jobs}; retry when some have ended",
                {"Retry-After": "5"},
            )
        left = int(credits) - int(reserved)
        amounts: list[int] = []
        for job in new:
            start_tier = _starting_tier(job)
            start = prices.tier(start_tier)
            most = prices.most(start_tier, job.max_tier)
            if job.options.max_credits is not None:
                most = min(most, job.options.max_credits)
            amount = min(most, max(left, 0))
            if amount < start:
                await conn.execute(_SPEND_TOKEN, (tokens, tenant))
                raise ApiError(
                    402,
                    "insufficient_credits",
                    f"{len(new)} job(s) need at least {_needed(new, prices)} credits to start;"
                    f" {max(int(credits) - int(reserved), 0)} are left ({credits} balance,"
                    f" {reserved} held by jobs not ended)",
                )
            amounts.append(amount)
            left -= amount
        for job in jobs:
            job.budget = known.get(job.job_id)
        for job, amount in zip(new, amounts, strict=True):
            job.budget = amount
        if new:
            await conn.execute(_RESERVE, (tenant, [j.job_id for j in new], amounts))
        await conn.execute(_UPDATE, (sum(amounts), len(new), tokens, tenant))
    return Admission(reserved=sum(amounts), remaining=left, new_ids=[j.job_id for j in new])


async def release(conn: AsyncConnection[Any], tenant: str, job_ids: list[str]) -> None:
    """Undo the reservations of jobs that were refused after admission (Kafka said no)."""
    async with conn.transaction():
        await conn.execute(_RELEASE, (tenant, job_ids, tenant))


async def release_unpublished(conn: AsyncConnection[Any], tenant: str) -> None:
    """Release ``tenant``'s reservations whose jobs never reached Kafka (see module doc)."""
    async with conn.transaction():
        await conn.execute(_ORPHANS, (tenant, tenant))
