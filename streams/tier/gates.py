"""What is decided about a job before it is fetched, and what its attempt costs.

Before fetching: is the job's tenant one this deployment runs jobs for (``streams.tenants``),
can the result cache answer it (``streams.cache``), may this tier spend what it costs (the job's
``max_credits`` and the credits reserved for it). After: what the attempt is charged
(``schemas.prices``; a job pays once, in its last attempt).
"""

from __future__ import annotations

import asyncio
import logging

from schemas import ErrorCode
from schemas.cache import CacheUnavailable, cache_key, shareable
from schemas.prices import Prices
from schemas.records import ScrapeRequest
from schemas.topics import TIER_ORDER
from streams.cache import CachedResponse, FetchCache, cached_response
from streams.config import WorkerConfig
from streams.metrics import StreamMetrics
from streams.tenants import TenantDirectory
from streams.tier.outcome import Kind, Outcome

__all__ = ["Gates"]

log = logging.getLogger(__name__)

# Jobs refused before anything ran, for reasons of the account: never charged.
_FREE = frozenset(
    {
        ErrorCode.UNKNOWN_TENANT,
        ErrorCode.TENANT_DISABLED,
        ErrorCode.BUDGET_EXCEEDED,
        ErrorCode.INSUFFICIENT_CREDITS,
    }
)


class Gates:
    def __init__(
        self,
        tier: str,
        worker_config: WorkerConfig,
        metrics: StreamMetrics,
        prices: Prices,
        cache: FetchCache | None,
        tenants: TenantDirectory | None,
    ) -> None:
        self.tier = tier
        self._tenants = tenants
        self._prices = prices
        self._price = prices.tier(tier)
        self._cache = cache
        self._cache_share = worker_config.cache_share_public
        self._cache_timeout_s = worker_config.cache_timeout_s
        self._cache_tiers = TIER_ORDER[TIER_ORDER.index(tier) :] if tier in TIER_ORDER else ()
        self._m_cache = {
            r: metrics.cache_lookups.labels(tier, r) for r in ("hit", "miss", "unavailable")
        }

    async def from_cache(self, job: ScrapeRequest, url: str) -> CachedResponse | None:
        """A cached fetch that may answer ``job`` (its first attempt, with ``max_age_s``)."""
        max_age = job.options.max_age_s
        if self._cache is None or not max_age or job.attempt != 1 or not self._cache_tiers:
            return None
        try:
            async with asyncio.timeout(self._cache_timeout_s):
                hit = await self._cache.lookup(
                    tenant=job.tenant,
                    key=cache_key(url, job.options),
                    max_age_s=max_age,
                    tiers=self._cache_tiers,
                    shared=self._cache_share and shareable(job.options),
                )
        except (CacheUnavailable, TimeoutError) as exc:
            log.warning("job %s: result cache unavailable, fetching (%s)", job.job_id, exc)
            self._m_cache["unavailable"].inc()
            return None
        self._m_cache["miss" if hit is None else "hit"].inc()
        return None if hit is None else cached_response(hit)

    def charge(self, outcome: Outcome, cached: bool, final: bool) -> int:
        """What this attempt costs (schemas.prices): a job pays once, in its last attempt."""
        if outcome.ok:
            return self._prices.cache_hit if cached else self._price
        if not final:
            return 0
        if outcome.code is ErrorCode.ROBOTS_DISALLOWED:
            return self._prices.robots_refusal
        if outcome.code in _FREE:
            return 0  # nothing ran: a job refused for its account is never charged
        return self._prices.failed

    async def refused_tenant(self, job: ScrapeRequest) -> Outcome | None:
        """A job of a tenant the deployment does not know, or has disabled, is not run."""
        if self._tenants is None:
            return None
        state = await self._tenants.state(job.tenant)
        if state == "active":
            return None
        if state == "disabled":
            return Outcome(Kind.FATAL, ErrorCode.TENANT_DISABLED, "the tenant is disabled")
        return Outcome(
            Kind.FATAL, ErrorCode.UNKNOWN_TENANT, f"no tenant {job.tenant!r} on this deployment"
        )

    def over_budget(self, job: ScrapeRequest) -> Outcome | None:
        """Why this tier may not fetch ``job``: it costs more than the job's ``max_credits``,
        or than the credits reserved for it (its tenant's balance when it was accepted)."""
        price, cap, budget = self._price, job.options.max_credits, job.budget
        if cap is not None and price > cap:
            return Outcome(
                Kind.FATAL,
                ErrorCode.BUDGET_EXCEEDED,
                f"the {self.tier} tier costs {price} credits, more than options.max_credits"
                f" ({cap})",
            )
        if budget is not None and price > budget:
            return Outcome(
                Kind.FATAL,
                ErrorCode.INSUFFICIENT_CREDITS,
                f"the {self.tier} tier costs {price} credits; {budget} could be reserved for"
                " this job when it was accepted",
            )
        return None
