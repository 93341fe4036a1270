"""The browser tiers against real Chromium (Debian's headless shell) and pages on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from schemas import ErrorCode
from schemas.options import WaitUntil
from streams.browser.config import BASE_ARGS, HEADLESS_SHELL, BrowserConfig
from streams.browser.errors import BrowserCrashed
from streams.browser.fetcher import BrowserFetcher
from streams.browser.request import BrowserRequest
from streams.config import FetchConfig
from streams.errors import FatalError, TransientError
from streams.fetchers.base import FetchRequest
from streams.fetchers.decompress import TooLarge
from tests.integration.browser_targets import (
    BrowserSite,
    chromium_browser_pids,
    chromium_pids,
    png_size,
    tree_memory_kib,
)

# One event loop for the module, so the tests can share one browser pool (``fetcher``).
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CHROMIUM = HEADLESS_SHELL  # the pool's default binary
UA = "ScrapifieTest/0.1 (+https://scrapifie.dev/bot)"


# The SSRF guard refuses loopback unless listed exactly; fixtures add their sites here.
ALLOW: tuple[str, ...] = ()


def _allow(base: str) -> None:
    global ALLOW  # noqa: PLW0603 - module-level test configuration
    ALLOW = (*ALLOW, base.removeprefix("http://"))


@pytest.fixture(scope="module")
def site() -> Iterator[BrowserSite]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is required for the browser tests (make install provides it)")
    with BrowserSite() as s:
        _allow(s.base)
        yield s


def config(**kw: object) -> BrowserConfig:
    return BrowserConfig.model_validate({"executable_path": CHROMIUM, "browsers": 1, **kw})


def _listing(path: Path) -> set[Path]:
    return set(path.iterdir()) if path.exists() else set()


async def no_chromium_left() -> list[int]:
    # Helpers (zygote, utility) exit right after their browser; give them a moment.
    for _ in range(50):
        left = chromium_pids()
        if not left:
            return []
        await asyncio.sleep(0.1)
    return chromium_pids()


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser") / "profiles"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fetcher(profiles: Path, site: BrowserSite) -> AsyncIterator[BrowserFetcher]:
    """One pool for the tests that need no special configuration."""
    async with BrowserFetcher(
        FetchConfig(allow_private=ALLOW, user_agent=UA, timeout_s=20),
        config(contexts_per_browser=4, profiles_dir=profiles),
    ) as f:
        yield f
    assert await no_chromium_left() == []


async def test_javascript_written_content_is_rendered(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    resp = await fetcher.fetch(FetchRequest(site.url("/js")))
    assert resp.status == 200
    assert b'<p id="out">rendered by javascript</p>' in resp.body
    assert resp.final_url == site.url("/js")
    assert resp.content_type == "text/html; charset=utf-8"
    assert resp.headers["x-target"] == "browser-site"
    assert resp.wire_bytes > len(b"rendered by")
    assert resp.screenshot is None


async def test_wait_for_a_selector_added_after_300ms(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    resp = await fetcher.fetch_browser(BrowserRequest(site.url("/delayed"), wait_for="#late"))
    assert b'<div id="late">late content</div>' in resp.body


async def test_a_selector_that_never_appears_times_out(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    with pytest.raises(TransientError) as err:
        await fetcher.fetch_browser(
            BrowserRequest(site.url("/js"), wait_for="#nope", timeout_s=1.5)
        )
    assert err.value.code is ErrorCode.TIMEOUT


async def test_screenshots_are_pngs_of_the_viewport_or_the_full_page(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    view = await fetcher.fetch_browser(BrowserRequest(site.url("/tall"), screenshot="viewport"))
    full = await fetcher.fetch_browser(BrowserRequest(site.url("/tall"), screenshot="full"))
    assert view.screenshot is not None and full.screenshot is not None
    assert png_size(view.screenshot) == (1280, 800)
    width, height = png_size(full.screenshot)
    assert width == 1280 and height >= 5000


async def test_blocked_images_never_reach_the_server(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    before = site.hits("/img/pixel.png")
    await fetcher.fetch_browser(BrowserRequest(site.url("/with-image"), block_resources={"image"}))
    assert site.hits("/img/pixel.png") == before
    # The control: without the blocklist the same page does request its image.
    await fetcher.fetch_browser(BrowserRequest(site.url("/with-image")))
    assert site.hits("/img/pixel.png") == before + 1


async def test_every_request_of_a_routed_job_passes_the_allow_hook(site: BrowserSite) -> None:
    class Guarded(BrowserFetcher):
        routed: list[str] = []

        async def _allow(self, url: str) -> bool:
            self.routed.append(url)
            if "broken-guard" in url:
                raise OSError("resolver down")
            return "denied" not in url

    def routed_job(path: str) -> BrowserRequest:  # a blocklist: the job needs the route handler
        return BrowserRequest(site.url(path), block_resources=frozenset({"media"}))

    async with Guarded(
        FetchConfig(allow_private=ALLOW, user_agent=UA, timeout_s=20), config()
    ) as f:
        resp = await f.fetch_browser(routed_job("/guarded-image"))
        assert b"has a denied image" in resp.body
        assert site.hits("/img/denied.png") == 0
        with pytest.raises(FatalError) as err:
            await f.fetch_browser(routed_job("/denied-page"))
        assert err.value.code is ErrorCode.SSRF_BLOCKED
        assert site.hits("/denied-page") == 0
        with pytest.raises(FatalError) as err:  # a guard that fails denies (fails closed)
            await f.fetch_browser(routed_job("/broken-guard"))
        assert err.value.code is ErrorCode.SSRF_BLOCKED
        assert site.hits("/broken-guard") == 0
        # A job with neither a blocklist nor headers of its own is not routed at all (the
        # guard proxy alone checks its connections: tests/integration/test_browser_ssrf.py).
        Guarded.routed.clear()
        await f.fetch(FetchRequest(site.url("/with-image")))
        assert Guarded.routed == []


async def test_jobs_never_share_cookies(fetcher: BrowserFetcher, site: BrowserSite) -> None:
    await fetcher.fetch(FetchRequest(site.url("/set-cookie")))
    resp = await fetcher.fetch(FetchRequest(site.url("/cookies")))
    assert b"cookies=[]" in resp.body


def _shown(label: bytes, body: bytes) -> str:
    found = re.search(rb"%s=\[([^\]]*)\]" % label, body)
    assert found is not None, body
    return found.group(1).decode()


async def test_a_context_serves_one_tenant_and_is_cleared_between_its_jobs(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    def job(path: str, tenant: str) -> BrowserRequest:
        return BrowserRequest(site.url(path), tenant=tenant)

    stats = fetcher.pool.stats
    opened, reused = stats.contexts, stats.reused
    await fetcher.fetch_browser(job("/set-cookie", "tenant-a"))
    await fetcher.fetch_browser(job("/storage?set=secret-of-a", "tenant-a"))
    same = await fetcher.fetch_browser(job("/storage", "tenant-a"))
    cookies_same = await fetcher.fetch_browser(job("/cookies", "tenant-a"))
    other = await fetcher.fetch_browser(job("/storage", "tenant-b"))
    cookies_other = await fetcher.fetch_browser(job("/cookies", "tenant-b"))
    # Tenant A's later jobs ran in A's context (its origin storage is there: documented) with
    # the cookies of A's earlier jobs cleared; tenant B got a context of its own, empty.
    assert _shown(b"storage", same.body) == "secret-of-a"
    assert _shown(b"cookies", cookies_same.body) == ""
    assert _shown(b"storage", other.body) == ""
    assert _shown(b"cookies", cookies_other.body) == ""
    assert stats.contexts - opened == 2
    assert stats.reused - reused == 4


async def test_a_kept_context_never_answers_from_its_http_cache(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    before = site.hits("/cacheable")
    for _ in range(3):
        resp = await fetcher.fetch_browser(BrowserRequest(site.url("/cacheable"), tenant="t-c"))
        assert b"cacheable" in resp.body
    assert site.hits("/cacheable") - before == 3


async def test_contexts_are_closed_after_jobs_per_context_and_after_a_failed_job(
    site: BrowserSite,
) -> None:
    others = set(chromium_browser_pids())
    async with BrowserFetcher(
        FetchConfig(allow_private=ALLOW, user_agent=UA, timeout_s=20),
        config(jobs_per_context=2),
    ) as f:
        for i in range(5):
            await f.fetch_browser(BrowserRequest(site.url(f"/page/{i}"), tenant="t"))
        assert (f.pool.stats.contexts, f.pool.stats.reused) == (3, 2)
        with pytest.raises(TransientError):
            await f.fetch_browser(BrowserRequest(site.url("/never"), tenant="t", timeout_s=1))
        await f.fetch_browser(BrowserRequest(site.url("/js"), tenant="t"))
        # The timed-out job ran in the fifth job's context, which was then closed, not
        # handed to the next job.
        assert (f.pool.stats.contexts, f.pool.stats.reused) == (4, 3)
        # A job with headers of its own needs a route handler: always a fresh context.
        await f.fetch_browser(
            BrowserRequest(site.url("/headers"), tenant="t", headers={"X-Job": "1"})
        )
        assert (f.pool.stats.contexts, f.pool.stats.reused) == (5, 3)
        assert len(f.guard_proxy._leases) == 1  # the kept context's; closed ones' ended
    assert set(chromium_browser_pids()) <= others


async def test_idle_contexts_are_bounded_and_expire(site: BrowserSite) -> None:
    async with BrowserFetcher(
        FetchConfig(allow_private=ALLOW, user_agent=UA, timeout_s=20),
        config(contexts_per_browser=1, idle_context_s=1.0),  # at most one idle context
    ) as f:

        async def fetch(tenant: str) -> None:
            await f.fetch_browser(BrowserRequest(site.url("/js"), tenant=tenant))

        for tenant in ("a", "b", "a", "a"):
            await fetch(tenant)
        # b's context pushed a's out; a's second context served a's last job too.
        assert (f.pool.stats.contexts, f.pool.stats.reused) == (3, 1)
        assert len(f.guard_proxy._leases) == 1
        await asyncio.sleep(1.2)
        await fetch("a")  # a's context waited longer than idle_context_s: closed, not used
        assert (f.pool.stats.contexts, f.pool.stats.reused) == (4, 1)


async def test_a_persistent_profile_keeps_cookies_for_its_tenant_only(
    fetcher: BrowserFetcher, site: BrowserSite, profiles: Path
) -> None:
    def job(path: str, tenant: str) -> BrowserRequest:
        return BrowserRequest(site.url(path), tenant=tenant, session_id="s-1")

    dirs = await asyncio.to_thread(_listing, profiles)
    launches = fetcher.pool.stats.persistent_launches
    await fetcher.fetch_browser(job("/set-cookie", "tenant-a"))
    same = await fetcher.fetch_browser(job("/cookies", "tenant-a"))
    other = await fetcher.fetch_browser(job("/cookies", "tenant-b"))
    # The session cookie (no expiry) survives too: Chromium drops those when it closes.
    found = re.search(rb"cookies=\[([^\]]*)\]", same.body)
    assert found is not None
    assert sorted(found.group(1).decode().split("; ")) == ["keep=k1", "sess=s1"]
    assert b"cookies=[]" in other.body
    assert len(await asyncio.to_thread(_listing, profiles) - dirs) == 2
    assert fetcher.pool.stats.persistent_launches == launches + 3


async def test_one_profile_is_used_by_one_job_at_a_time(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    # Two Chromiums on one user-data-dir would fail to start; the per-profile lock queues them.
    reqs = [BrowserRequest(site.url(f"/page/{i}"), tenant="t", session_id="same") for i in range(3)]
    resps = await asyncio.gather(*(fetcher.fetch_browser(r) for r in reqs))
    assert [r.status for r in resps] == [200, 200, 200]


async def test_contexts_per_browser_bounds_concurrent_jobs(site: BrowserSite) -> None:
    site.server.max_in_flight = 0
    async with BrowserFetcher(
        FetchConfig(allow_private=ALLOW, user_agent=UA, timeout_s=20),
        config(contexts_per_browser=2),
    ) as f:
        resps = await asyncio.gather(*(f.fetch(FetchRequest(site.url("/slow"))) for _ in range(6)))
    assert all(r.status == 200 for r in resps)
    assert 1 <= site.server.max_in_flight <= 2


async def test_a_browser_killed_mid_job_fails_that_job_and_the_pool_recovers(
    site: BrowserSite,
) -> None:
    site.server.stalled.clear()
    others = set(chromium_browser_pids())  # the shared fetcher's browser, if any
    async with BrowserFetcher(
        FetchConfig(allow_private=ALLOW, user_agent=UA, timeout_s=30), config()
    ) as f:
        job = asyncio.create_task(f.fetch(FetchRequest(site.url("/never"))))
        assert await asyncio.to_thread(site.server.stalled.wait, 15), "page never requested"
        pids = set(chromium_browser_pids()) - others
        assert len(pids) == 1
        os.kill(pids.pop(), signal.SIGKILL)
        with pytest.raises(BrowserCrashed) as err:
            await job
        assert isinstance(err.value, TransientError)
        assert err.value.code is ErrorCode.CONNECTION_ERROR
        resp = await f.fetch(FetchRequest(site.url("/js")))
        assert b"rendered by javascript" in resp.body
        assert f.pool.stats.crashed == 1
        assert f.pool.stats.launches == 2
    assert set(chromium_browser_pids()) <= others


async def test_a_persistent_browser_killed_mid_job_fails_that_job_only(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    site.server.stalled.clear()
    first = BrowserRequest(site.url("/set-cookie"), tenant="t", session_id="k")
    await fetcher.fetch_browser(first)
    others = set(chromium_browser_pids())
    job = asyncio.create_task(
        fetcher.fetch_browser(BrowserRequest(site.url("/never"), tenant="t", session_id="k"))
    )
    assert await asyncio.to_thread(site.server.stalled.wait, 15), "page never requested"
    pids = set(chromium_browser_pids()) - others
    assert len(pids) == 1
    os.kill(pids.pop(), signal.SIGKILL)
    with pytest.raises(BrowserCrashed):
        await job
    # The profile (its stale Chromium lock included) is usable again, cookies kept on disk.
    again = await fetcher.fetch_browser(
        BrowserRequest(site.url("/cookies"), tenant="t", session_id="k")
    )
    assert b"keep=k1" in again.body


async def test_browsers_are_recycled_after_pages_per_browser(site: BrowserSite) -> None:
    others = set(chromium_browser_pids())
    async with BrowserFetcher(
        FetchConfig(allow_private=ALLOW, user_agent=UA, timeout_s=20), config(pages_per_browser=3)
    ) as f:
        for i in range(7):
            resp = await f.fetch(FetchRequest(site.url(f"/page/{i}")))
            assert resp.status == 200
        assert f.pool.stats.launches == 3
        assert f.pool.stats.retired == 2  # after pages 3 and 6; the third browser serves 7
        # Retired browsers are closed (in the background, once their last job ended).
        for _ in range(50):
            if len(set(chromium_browser_pids()) - others) == 1:
                break
            await asyncio.sleep(0.1)
        assert len(set(chromium_browser_pids()) - others) == 1
    assert set(chromium_browser_pids()) <= others


async def test_a_page_that_never_finishes_loading_times_out(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    with pytest.raises(TransientError) as err:
        await fetcher.fetch(FetchRequest(site.url("/never"), timeout_s=2))
    assert err.value.code is ErrorCode.TIMEOUT


async def test_rendered_html_over_the_cap_is_too_large(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    with pytest.raises(TooLarge):
        await fetcher.fetch(FetchRequest(site.url("/page/1"), max_body_bytes=10_000))


async def test_the_rendered_html_is_the_whole_document(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    resp = await fetcher.fetch(FetchRequest(site.url("/js")))
    assert resp.body.startswith(b"<!DOCTYPE html><html><head><title>js</title>")
    assert resp.body.endswith(b"</html>")


async def test_scripts_replacing_the_serializers_cannot_ship_more_than_the_cap(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    with pytest.raises(TooLarge):
        await fetcher.fetch(FetchRequest(site.url("/huge-serializer"), max_body_bytes=100_000))
    with pytest.raises(FatalError) as err:
        await fetcher.fetch(FetchRequest(site.url("/broken-serializer")))
    assert err.value.code is ErrorCode.DECODE_ERROR
    # The fetcher (and its browser) keeps serving.
    assert b"rendered by javascript" in (await fetcher.fetch(FetchRequest(site.url("/js")))).body


async def test_http_error_statuses_are_responses(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    resp = await fetcher.fetch(FetchRequest(site.url("/missing")))
    assert resp.status == 404
    assert b"not here" in resp.body


async def test_non_html_documents_are_returned_as_served(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    resp = await fetcher.fetch(FetchRequest(site.url("/json")))
    assert resp.body == b'{"hello": "world"}'
    assert resp.content_type == "application/json"


async def test_a_download_is_not_a_page(fetcher: BrowserFetcher, site: BrowserSite) -> None:
    with pytest.raises(FatalError) as err:
        await fetcher.fetch(FetchRequest(site.url("/download")))
    assert err.value.code is ErrorCode.HTTP_ERROR
    assert "download" in err.value.message


@pytest.mark.parametrize("wait_until", ["domcontentloaded", "networkidle"])
async def test_other_load_states(
    fetcher: BrowserFetcher, site: BrowserSite, wait_until: WaitUntil
) -> None:
    resp = await fetcher.fetch_browser(BrowserRequest(site.url("/js"), wait_until=wait_until))
    assert b"rendered by javascript" in resp.body


async def test_job_headers_reach_the_site_but_credentials_do_not(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    resp = await fetcher.fetch(
        FetchRequest(
            site.url("/headers"),
            headers={"X-Job": "42", "Authorization": "Bearer secret", "Cookie": "a=1"},
        )
    )
    found = re.search(rb"<pre>(.*)</pre>", resp.body)
    assert found is not None
    seen = json.loads(found.group(1).decode().replace("&quot;", '"'))
    assert seen["x-job"] == "42"
    assert seen["user-agent"] == UA
    assert "authorization" not in seen
    assert seen["cookie"] == "a=1"  # as a browser cookie scoped to the URL


async def test_connection_refused_is_transient() -> None:
    from scrapifie.local.ports import free_port

    port = free_port()
    cfg = FetchConfig(allow_private=(f"127.0.0.1:{port}",), user_agent=UA, timeout_s=20)
    async with BrowserFetcher(cfg, config()) as f:
        with pytest.raises(TransientError) as err:
            await f.fetch(FetchRequest(f"http://127.0.0.1:{port}/"))
    assert err.value.code is ErrorCode.CONNECTION_ERROR


# Benchmarks (never in the default run) -----------------------------------------------------


class _ServedSite:
    """The browser site in its own process, so serving does not compete with our event loop."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.browser_targets"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode()
        self.base = f"http://127.0.0.1:{int(line.split()[1])}"
        self.pid = self._proc.pid

    def close(self) -> None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.close()
        self._proc.wait(10)
        self._proc.stdout.close()


@pytest.fixture(scope="module")
def served() -> Iterator[_ServedSite]:
    s = _ServedSite()
    _allow(s.base)
    yield s
    s.close()


async def _run(n: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Wall seconds for ``n`` calls of ``one``, ``concurrency`` at a time."""
    sem = asyncio.Semaphore(concurrency)

    async def go(i: int) -> None:
        async with sem:
            await one(i)

    start = time.perf_counter()
    await asyncio.gather(*(go(i) for i in range(n)))
    return time.perf_counter() - start


@pytest.mark.bench
async def test_bench_pages_per_second(served: _ServedSite) -> None:
    from playwright.async_api import Browser, async_playwright

    n = 100
    rows = []
    for concurrency in (1, 4, 8):
        # Ours: the pool (browsers x contexts = concurrency), route handler, checks, content.
        browsers = 1 if concurrency == 1 else 2
        cfg = config(browsers=browsers, contexts_per_browser=max(1, concurrency // browsers))
        async with BrowserFetcher(FetchConfig(allow_private=ALLOW, user_agent=UA), cfg) as f:
            await f.fetch(FetchRequest(f"{served.base}/page/0"))  # launch outside the timing

            async def ours(i: int, f: BrowserFetcher = f) -> None:
                r = await f.fetch(FetchRequest(f"{served.base}/page/{i}"))
                assert r.status == 200

            ours_s = await _run(n, concurrency, ours)

        # Raw Playwright: the same browsers, new context + page per URL, goto, content, close.
        async with async_playwright() as pw:
            launched = [
                await pw.chromium.launch(executable_path=CHROMIUM, args=list(BASE_ARGS))
                for _ in range(browsers)
            ]

            async def raw(i: int, launched: list[Browser] = launched) -> None:
                ctx = await launched[i % len(launched)].new_context(user_agent=UA)
                try:
                    page = await ctx.new_page()
                    resp = await page.goto(f"{served.base}/page/{i}")
                    assert resp is not None and resp.status == 200
                    await page.content()
                finally:
                    await ctx.close()

            await raw(0)
            raw_s = await _run(n, concurrency, raw)
            for b in launched:
                await b.close()
        rows.append((concurrency, ours_s, raw_s))
    print()
    print(f"{n} pages of 20 KB, new context per page, {os.cpu_count()} CPUs, load {_load()}")
    print("concurrency | pool: ms/page pages/s | raw: ms/page pages/s")
    for c, o, r in rows:
        print(f"{c:>11} | {o / n * 1e3:>13.1f} {n / o:>7.1f} | {r / n * 1e3:>12.1f} {n / r:>7.1f}")


class _Unguarded(BrowserFetcher):
    """The fetcher as it was before the guard proxy: contexts connect directly (bench only)."""

    @contextlib.asynccontextmanager
    async def _context(self, request: Any, job: Any) -> AsyncIterator[Any]:
        async with self.pool.context() as ctx:
            yield ctx


@pytest.mark.bench
async def test_bench_guard_proxy_cost(served: _ServedSite) -> None:
    """Pages/s at concurrency 4 with and without the guard proxy, runs interleaved (the machine
    is shared: compare within one run only)."""
    n, concurrency, rounds = 40, 4, 3
    cfg = config(browsers=2, contexts_per_browser=2)
    fetch_cfg = FetchConfig(allow_private=ALLOW, user_agent=UA)
    results: dict[str, list[float]] = {"direct": [], "guard proxy": []}
    async with _Unguarded(fetch_cfg, cfg) as direct, BrowserFetcher(fetch_cfg, cfg) as guarded:
        fetchers: dict[str, BrowserFetcher] = {"direct": direct, "guard proxy": guarded}
        for f in fetchers.values():  # launch both browsers outside the timing
            await asyncio.gather(
                *(f.fetch(FetchRequest(f"{served.base}/page/{i}")) for i in range(concurrency))
            )
        for _ in range(rounds):
            for name, f in fetchers.items():

                async def one(i: int, f: BrowserFetcher = f) -> None:
                    r = await f.fetch(FetchRequest(f"{served.base}/page/{i}"))
                    assert r.status == 200

                results[name].append(n / await _run(n, concurrency, one))
        stats = guarded.guard_proxy.stats
    print()
    print(f"{n} pages x {rounds} rounds, concurrency {concurrency}, load {_load()}")
    for name, rates in results.items():
        print(f"{name:>12}: pages/s " + " ".join(f"{r:.1f}" for r in rates))
    print(f"guard proxy: {stats}")


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


@pytest.mark.bench
async def test_bench_memory_of_1000_pages(served: _ServedSite) -> None:
    n = 1000
    peak_rss = peak_pss = 0
    samples: list[tuple[int, int]] = []
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak_rss, peak_pss
        while not stop.is_set():
            rss, pss = await asyncio.to_thread(tree_memory_kib, None, served.pid)
            samples.append((rss, pss))
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            await asyncio.sleep(0.25)

    base_rss, base_pss = tree_memory_kib(exclude=served.pid)
    cfg = BrowserConfig(executable_path=CHROMIUM)  # the pool's defaults
    sampler = asyncio.create_task(sample())
    start = time.perf_counter()
    async with BrowserFetcher(FetchConfig(allow_private=ALLOW, user_agent=UA), cfg) as f:

        async def one(i: int) -> None:
            r = await f.fetch(FetchRequest(f"{served.base}/page/{i}"))
            assert r.status == 200

        await _run(n, 8, one)
        launches = f.pool.stats.launches
        end_rss, end_pss = tree_memory_kib(exclude=served.pid)
    elapsed = time.perf_counter() - start
    stop.set()
    await sampler
    print()
    print(
        f"{n} pages, {cfg.browsers} browser(s) x {cfg.contexts_per_browser} contexts,"
        f" pages_per_browser={cfg.pages_per_browser}: {elapsed:.1f}s, "
        f"{launches} launches, {len(samples)} samples"
    )
    print(f"load {_load()}")
    print(f"before: RSS {base_rss / 1024:.0f} MiB, PSS {base_pss / 1024:.0f} MiB")
    print(f"peak:   RSS {peak_rss / 1024:.0f} MiB, PSS {peak_pss / 1024:.0f} MiB")
    print(f"at end: RSS {end_rss / 1024:.0f} MiB, PSS {end_pss / 1024:.0f} MiB")


async def test_the_ssrf_guard_refuses_private_targets_by_default(site: BrowserSite) -> None:
    async with BrowserFetcher(FetchConfig(user_agent=UA, timeout_s=20), config()) as f:
        with pytest.raises(FatalError) as err:
            await f.fetch(FetchRequest(site.url("/page/ssrf-probe")))
        assert err.value.code is ErrorCode.SSRF_BLOCKED
    assert site.hits("/page/ssrf-probe") == 0  # the browser never sent the request
