"""Per-site rate and concurrency limits with adaptive backoff (Scrapy's AutoThrottle as the
reference): a site that answers 429/503 or times out gets a longer delay, which decays back to
the configured rate as it answers well again. ``Retry-After`` and ``Crawl-delay`` are honoured.

Sites are registrable domains (the tier topics' key), so the worker owning a site's partition
owns its limiter state; no coordination between workers is needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class SiteLimit(BaseModel):
    model_config = ConfigDict(frozen=True)

    rate_per_s: float = Field(4.0, gt=0, description="Request starts per second.")
    concurrency: int = Field(4, gt=0, description="Requests in flight at once.")


@dataclass(slots=True)
class _Site:
    limit: SiteLimit
    sem: asyncio.Semaphore
    next_start: float = 0.0
    adaptive_s: float = 0.0
    waiting: int = 0
    active: int = 0


class Feedback:
    OK = "ok"
    THROTTLED = "throttled"  # 429, 503
    SLOW = "slow"  # timeouts
    ERROR = "error"  # anything else: no change


class SiteLimiter:
    def __init__(
        self,
        default: SiteLimit,
        overrides: Mapping[str, SiteLimit] | None = None,
        *,
        max_delay_s: float = 60.0,
        max_sites: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = asyncio.sleep,
    ) -> None:
        self._default = default
        self._overrides = dict(overrides or {})
        self._max_delay_s = max_delay_s
        self._max_sites = max_sites
        self._clock = clock
        self._sleep = sleep
        self._sites: dict[str, _Site] = {}

    def _site(self, key: str) -> _Site:
        site = self._sites.get(key)
        if site is None:
            if len(self._sites) >= self._max_sites:
                self._evict_idle()
            limit = self._overrides.get(key, self._default)
            site = _Site(limit, asyncio.Semaphore(limit.concurrency))
            self._sites[key] = site
        return site

    def _evict_idle(self) -> None:
        now = self._clock()
        for key in [
            k
            for k, s in self._sites.items()
            if not s.waiting and not s.active and s.next_start < now
        ]:
            del self._sites[key]

    def delay_s(self, key: str, crawl_delay_s: float | None = None) -> float:
        """Current spacing between request starts for ``key``."""
        site = self._site(key)
        return min(
            self._max_delay_s,
            max(1.0 / site.limit.rate_per_s, site.adaptive_s, crawl_delay_s or 0.0),
        )

    def queued(self, key: str) -> int:
        site = self._sites.get(key)
        return site.waiting if site else 0

    async def acquire(self, key: str, crawl_delay_s: float | None = None) -> None:
        """Wait for a concurrency slot and for the site's next start time. Pair with release()."""
        site = self._site(key)
        site.waiting += 1
        try:
            await site.sem.acquire()
            try:
                while True:
                    now = self._clock()
                    wait = site.next_start - now
                    if wait <= 0:
                        break
                    await self._sleep(wait)  # type: ignore[misc]
                site.next_start = max(now, site.next_start) + self.delay_s(key, crawl_delay_s)
            except BaseException:
                site.sem.release()
                raise
        finally:
            site.waiting -= 1
        site.active += 1

    def release(
        self, key: str, feedback: str, latency_s: float, retry_after_s: float | None = None
    ) -> None:
        site = self._site(key)
        site.active -= 1
        site.sem.release()
        base = 1.0 / site.limit.rate_per_s
        if feedback == Feedback.OK:
            # Aim for `concurrency` requests in flight at the observed latency, never faster
            # than the configured rate; halve the distance each time (AutoThrottle's smoothing).
            target = latency_s / site.limit.concurrency
            site.adaptive_s = max(base, (site.adaptive_s + target) / 2) if site.adaptive_s else 0.0
            if site.adaptive_s <= base * 1.01:
                site.adaptive_s = 0.0
        elif feedback == Feedback.THROTTLED:
            site.adaptive_s = min(self._max_delay_s, max(site.adaptive_s * 2, base * 2, 1.0))
        elif feedback == Feedback.SLOW:
            site.adaptive_s = min(self._max_delay_s, max(site.adaptive_s * 1.5, base * 1.5, 0.5))
        if retry_after_s:
            site.next_start = max(
                site.next_start, self._clock() + min(retry_after_s, self._max_delay_s)
            )
