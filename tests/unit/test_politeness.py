"""robots.txt cache and per-site limiter, with a fake fetcher and a fake clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from schemas import ErrorCode
from streams.errors import FatalError, TransientError
from streams.fetchers.base import FetchRequest, FetchResponse
from streams.politeness import RobotsCache, SiteLimit, SiteLimiter
from streams.politeness.limits import Feedback

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class FakeFetcher:
    def __init__(
        self, status: int = 200, body: bytes = b"", error: Exception | None = None
    ) -> None:
        self.status, self.body, self.error = status, body, error
        self.calls: list[str] = []

    async def fetch(self, request: FetchRequest) -> FetchResponse:
        self.calls.append(request.url)
        await asyncio.sleep(0.01)
        if self.error is not None:
            raise self.error
        return FetchResponse(request.url, request.url, self.status, {}, self.body, "text/plain", 0)


async def test_robots_rules_and_crawl_delay_are_obeyed_for_our_token() -> None:
    body = (
        b"User-agent: Scrapifie\nDisallow: /private\nCrawl-delay: 3\n\nUser-agent: *\nDisallow: /\n"
    )
    cache = RobotsCache(FakeFetcher(body=body), "Scrapifie")
    ok = await cache.check("http://a.test/public")
    assert ok.allowed and ok.crawl_delay_s == 3
    no = await cache.check("http://a.test/private/x")
    assert not no.allowed and "robots.txt" in (no.reason or "")


async def test_robots_is_fetched_once_per_origin_even_under_a_burst() -> None:
    fetcher = FakeFetcher(body=b"User-agent: *\nAllow: /\n")
    cache = RobotsCache(fetcher, "Scrapifie")
    await asyncio.gather(*(cache.check(f"http://a.test/{i}") for i in range(50)))
    await cache.check("http://b.test/")
    assert fetcher.calls == ["http://a.test/robots.txt", "http://b.test/robots.txt"]


async def test_robots_ttl_expires() -> None:
    clock = FakeClock()
    fetcher = FakeFetcher(status=404)
    cache = RobotsCache(fetcher, "Scrapifie", ttl_s=10, clock=clock)
    await cache.check("http://a.test/")
    clock.now += 11
    await cache.check("http://a.test/")
    assert len(fetcher.calls) == 2


@pytest.mark.parametrize(
    ("fetcher", "allowed"),
    [
        (FakeFetcher(status=404), True),  # 4xx: no rules
        (FakeFetcher(status=403), True),
        (FakeFetcher(status=503), False),  # 5xx: unreachable, disallow all (RFC 9309)
        (FakeFetcher(error=TransientError(ErrorCode.TIMEOUT, "slow")), False),
        (FakeFetcher(error=FatalError(ErrorCode.TOO_LARGE, "huge")), True),
    ],
)
async def test_robots_status_semantics(fetcher: FakeFetcher, allowed: bool) -> None:
    verdict = await RobotsCache(fetcher, "Scrapifie").check("http://a.test/x")
    assert verdict.allowed is allowed


async def test_limiter_spaces_starts_by_the_rate() -> None:
    clock = FakeClock()
    limiter = SiteLimiter(SiteLimit(rate_per_s=4, concurrency=10), clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(5):
        await limiter.acquire("a.test")
        starts.append(clock.now)
        limiter.release("a.test", Feedback.OK, 0.0)
    assert [round(b - a, 3) for a, b in itertools.pairwise(starts)] == [0.25] * 4


async def test_limiter_bounds_concurrency_per_site_only() -> None:
    limiter = SiteLimiter(SiteLimit(rate_per_s=1e9, concurrency=2))
    await limiter.acquire("a.test")
    await limiter.acquire("a.test")
    third = asyncio.create_task(limiter.acquire("a.test"))
    await asyncio.sleep(0.01)
    assert not third.done() and limiter.queued("a.test") == 1
    await asyncio.wait_for(limiter.acquire("b.test"), 1)  # another site is not held up
    limiter.release("a.test", Feedback.OK, 0.0)
    await asyncio.wait_for(third, 1)


async def test_throttling_backs_off_then_recovers_and_overrides_apply() -> None:
    clock = FakeClock()
    limiter = SiteLimiter(
        SiteLimit(rate_per_s=10, concurrency=1),
        {"fast.test": SiteLimit(rate_per_s=100, concurrency=1)},
        clock=clock,
        sleep=clock.sleep,
    )
    assert limiter.delay_s("fast.test") == pytest.approx(0.01)
    assert limiter.delay_s("a.test") == pytest.approx(0.1)
    await limiter.acquire("a.test")
    limiter.release("a.test", Feedback.THROTTLED, 0.05)
    backed_off = limiter.delay_s("a.test")
    assert backed_off >= 1.0
    for _ in range(30):
        await limiter.acquire("a.test")
        limiter.release("a.test", Feedback.OK, 0.01)
    assert limiter.delay_s("a.test") == pytest.approx(0.1)  # back to the configured rate
    assert limiter.delay_s("a.test", crawl_delay_s=2.0) == 2.0


async def test_retry_after_pushes_the_next_start() -> None:
    clock = FakeClock()
    limiter = SiteLimiter(SiteLimit(rate_per_s=100, concurrency=1), clock=clock, sleep=clock.sleep)
    await limiter.acquire("a.test")
    limiter.release("a.test", Feedback.THROTTLED, 0.0, retry_after_s=7)
    before = clock.now
    await limiter.acquire("a.test")
    assert clock.now - before >= 7
