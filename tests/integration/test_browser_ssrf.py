"""The browser tiers' network guard, against real Chromium: redirect hops, WebSockets, subresources,
WebRTC and link-local targets all meet the guard proxy; egress through a real forward proxy
(tinyproxy). Targets on 127.0.0.1; only the test site's host:port is allowlisted."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright

from schemas import ErrorCode
from scrapifie.local.ports import free_port
from streams.browser.config import BASE_ARGS, HEADLESS_SHELL, PROXIED_ARGS, BrowserConfig
from streams.browser.fetcher import BrowserFetcher
from streams.browser.request import BrowserRequest
from streams.config import FetchConfig
from streams.errors import FatalError, TransientError
from streams.fetchers.base import FetchRequest
from streams.fetchers.egress import EgressConfig, EgressFetcher, EgressPools
from tests.integration.browser_targets import BrowserSite, PortWatch, UdpWatch
from tests.integration.test_egress import SECRET, Tinyproxy

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

CHROMIUM = HEADLESS_SHELL  # the pool's default binary
UA = "ScrapifieTest/0.1 (+https://scrapifie.dev/bot)"


@pytest.fixture(scope="module")
def site() -> Iterator[BrowserSite]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is required for the browser tests (make install provides it)")
    with BrowserSite() as s:
        yield s


def allow(site: BrowserSite) -> tuple[str, ...]:
    port = site.server.server_address[1]
    return (f"127.0.0.1:{port}", f"localhost:{port}")


def browser_config(tmp: Path | None = None) -> BrowserConfig:
    return BrowserConfig(executable_path=CHROMIUM, browsers=1, profiles_dir=tmp)


class Unrouted(BrowserFetcher):
    """The route handler lets everything through: what is refused here, the proxy refused."""

    async def _allow(self, url: str) -> bool:
        return True


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fetcher(
    site: BrowserSite, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BrowserFetcher]:
    async with BrowserFetcher(
        FetchConfig(allow_private=allow(site), user_agent=UA, timeout_s=20),
        browser_config(tmp_path_factory.mktemp("profiles")),
    ) as f:
        yield f


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def unrouted(site: BrowserSite) -> AsyncIterator[BrowserFetcher]:
    async with Unrouted(
        FetchConfig(allow_private=allow(site), user_agent=UA, timeout_s=20), browser_config()
    ) as f:
        yield f


@pytest.fixture
def private() -> Iterator[PortWatch]:
    with PortWatch() as watch:
        yield watch


# the gaps page.route leaves ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fresh", "kept", "persistent"])
async def test_a_redirect_to_a_private_port_fails_ssrf_blocked(
    fetcher: BrowserFetcher, site: BrowserSite, private: PortWatch, kind: str
) -> None:
    url = site.url(f"/redirect?to=http://{private.target}/secret")
    request = {
        "fresh": BrowserRequest(url),
        "kept": BrowserRequest(url, tenant="t"),  # a context the tenant's jobs share
        "persistent": BrowserRequest(url, tenant="t", session_id="redirect"),
    }[kind]
    if kind == "kept":  # the context has served a job before
        await fetcher.fetch_browser(BrowserRequest(site.url("/js"), tenant="t"))
    with pytest.raises(FatalError) as err:
        await fetcher.fetch_browser(request)
    assert err.value.code is ErrorCode.SSRF_BLOCKED
    assert private.target in err.value.message
    assert site.hits("/redirect") >= 1  # the allowed first hop was fetched
    assert private.connections == 0
    # The refusal was that job's: the tenant's next job renders.
    resp = await fetcher.fetch_browser(BrowserRequest(site.url("/js"), tenant="t"))
    assert b"rendered by javascript" in resp.body


async def test_a_redirect_to_a_link_local_address_fails_ssrf_blocked(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    with pytest.raises(FatalError) as err:
        await fetcher.fetch(
            FetchRequest(site.url("/redirect?to=http://169.254.169.254/latest/meta-data/"))
        )
    assert err.value.code is ErrorCode.SSRF_BLOCKED
    assert "169.254.169.254" in err.value.message


async def test_a_websocket_to_a_private_port_never_connects(
    fetcher: BrowserFetcher, site: BrowserSite, private: PortWatch
) -> None:
    refused = fetcher.guard_proxy.stats.refused
    resp = await fetcher.fetch_browser(
        BrowserRequest(site.url(f"/probe/websocket?target={private.target}"), wait_for="#done")
    )
    assert resp.status == 200 and b"websocket probe" in resp.body  # the page itself is fine
    assert private.connections == 0
    assert fetcher.guard_proxy.stats.refused > refused  # Chromium asked the proxy; refused


async def test_subresources_of_private_ports_never_connect_even_unrouted(
    unrouted: BrowserFetcher, site: BrowserSite, private: PortWatch
) -> None:
    # The route handler is switched off: the guard proxy alone stands between page and port.
    resp = await unrouted.fetch_browser(
        BrowserRequest(site.url(f"/probe/subresources?target={private.target}"), wait_for="#done")
    )
    assert resp.status == 200 and b"subresource probe" in resp.body
    assert private.connections == 0


async def test_a_private_main_document_fails_ssrf_blocked_even_unrouted(
    unrouted: BrowserFetcher, private: PortWatch
) -> None:
    with pytest.raises(FatalError) as err:
        await unrouted.fetch(FetchRequest(f"http://{private.target}/"))
    assert err.value.code is ErrorCode.SSRF_BLOCKED
    assert private.connections == 0


async def test_link_local_targets_go_through_the_proxy_too(
    unrouted: BrowserFetcher, site: BrowserSite
) -> None:
    # Chromium bypasses proxies for loopback and link-local unless told otherwise: the image
    # request reaching the proxy (and being refused there) shows it did not go around it.
    refused = unrouted.guard_proxy.stats.refused
    resp = await unrouted.fetch_browser(
        BrowserRequest(site.url("/probe/subresources?target=169.254.169.254:80"), wait_for="#done")
    )
    assert resp.status == 200
    assert unrouted.guard_proxy.stats.refused > refused


async def test_webrtc_sends_no_udp_around_the_proxy(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    with UdpWatch() as stun:
        resp = await fetcher.fetch_browser(
            BrowserRequest(site.url(f"/probe/webrtc?target={stun.target}"), wait_for="#done")
        )
        assert resp.status == 200
        assert stun.datagrams == 0


async def test_without_the_guard_these_probes_do_reach_private_ports(site: BrowserSite) -> None:
    """The control for the tests above: plain Playwright (no proxy, no WebRTC policy), same
    pages, and the private ports are reached. So the tests above can fail."""
    with PortWatch() as ws_port, PortWatch() as img_port, UdpWatch() as stun:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = await browser.new_page()
                for kind, target in (
                    ("websocket", ws_port.target),
                    ("subresources", img_port.target),
                ):
                    await page.goto(site.url(f"/probe/{kind}?target={target}"))
                    await page.wait_for_selector("#done", state="attached")
                # Unanswered, ICE gathering takes STUN's whole retry schedule to complete:
                # wait for the first datagram instead.
                await page.goto(site.url(f"/probe/webrtc?target={stun.target}"))
                for _ in range(200):
                    if stun.datagrams:
                        break
                    await asyncio.sleep(0.1)
            finally:
                await browser.close()
        assert ws_port.connections >= 1
        assert img_port.connections >= 1
        assert stun.datagrams >= 1


# what still works ----------------------------------------------------------------------------


async def test_an_allowed_page_renders_through_the_proxy(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    forwarded = fetcher.guard_proxy.stats.forwarded
    resp = await fetcher.fetch(FetchRequest(site.url("/js")))
    assert resp.status == 200
    assert b'<p id="out">rendered by javascript</p>' in resp.body
    assert fetcher.guard_proxy.stats.forwarded > forwarded


async def test_names_are_resolved_by_the_proxy_not_by_chromium(
    fetcher: BrowserFetcher, site: BrowserSite
) -> None:
    # Chromium's own resolver answers "not found" for every name (PROXIED_ARGS); the page
    # still loads because the guard proxy resolves (and checks) the name.
    port = site.server.server_address[1]
    resp = await fetcher.fetch(FetchRequest(f"http://localhost:{port}/js"))
    assert b"rendered by javascript" in resp.body
    assert resp.final_url == f"http://localhost:{port}/js"


async def test_the_resolver_rules_leave_chromium_unable_to_resolve_names(site: BrowserSite) -> None:
    """What PROXIED_ARGS does on this Chromium, checked without a proxy: names fail, while an
    IP literal (the guard proxy's address) still connects."""
    port = site.server.server_address[1]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=[*BASE_ARGS, *PROXIED_ARGS]
        )
        try:
            page = await browser.new_page()
            with pytest.raises(PlaywrightError, match="ERR_NAME_NOT_RESOLVED"):
                await page.goto(f"http://localhost:{port}/js")
            page = await browser.new_page()  # the first one is busy with its error page
            resp = await page.goto(f"http://127.0.0.1:{port}/js")
            assert resp is not None and resp.status == 200
        finally:
            await browser.close()


async def test_a_refused_connection_is_still_transient(site: BrowserSite) -> None:
    port = free_port()
    cfg = FetchConfig(allow_private=(f"127.0.0.1:{port}",), user_agent=UA, timeout_s=20)
    async with BrowserFetcher(cfg, browser_config()) as f:
        with pytest.raises(TransientError) as err:
            await f.fetch(FetchRequest(f"http://127.0.0.1:{port}/"))
    assert err.value.code is ErrorCode.CONNECTION_ERROR
    assert f"127.0.0.1:{port}" in err.value.message


# egress through a real forward proxy ---------------------------------------------------------


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    proxy = Tinyproxy(tmp_path, "browser-egress")
    yield proxy
    proxy.stop()


def _seen_headers(body: bytes) -> dict[str, str]:
    found = re.search(rb"<pre>(.*)</pre>", body)
    assert found is not None
    seen: dict[str, str] = json.loads(found.group(1).decode().replace("&quot;", '"'))
    return seen


async def _wait_listening(port: int) -> None:
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    pytest.fail(f"nothing listens on 127.0.0.1:{port}")


async def test_pages_go_out_through_the_jobs_egress_proxy(
    fetcher: BrowserFetcher,
    site: BrowserSite,
    tinyproxy: Tinyproxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await _wait_listening(tinyproxy.port)
    resp = await fetcher.fetch(FetchRequest(site.url("/headers"), proxy=tinyproxy.url))
    seen = _seen_headers(resp.body)
    assert "browser-egress" in seen.get("via", "")  # tinyproxy carried it
    assert "proxy-authorization" not in seen
    assert SECRET not in caplog.text


async def test_a_tenants_jobs_share_contexts_only_through_the_same_egress_proxy(
    fetcher: BrowserFetcher, site: BrowserSite, tinyproxy: Tinyproxy
) -> None:
    await _wait_listening(tinyproxy.port)
    for _ in range(2):
        via = await fetcher.fetch_browser(
            BrowserRequest(site.url("/headers"), tenant="t-egress", proxy=tinyproxy.url)
        )
        assert "browser-egress" in _seen_headers(via.body).get("via", "")
        direct = await fetcher.fetch_browser(
            BrowserRequest(site.url("/headers"), tenant="t-egress")
        )
        assert "via" not in _seen_headers(direct.body)


async def test_a_dead_egress_proxy_is_a_proxy_error_and_the_pool_moves_on(
    fetcher: BrowserFetcher,
    site: BrowserSite,
    tinyproxy: Tinyproxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await _wait_listening(tinyproxy.port)
    dead = f"http://scrapifie:{SECRET}@127.0.0.1:{free_port()}"
    with pytest.raises(TransientError) as err:
        await fetcher.fetch(FetchRequest(site.url("/headers"), proxy=dead))
    assert err.value.code is ErrorCode.PROXY_ERROR
    assert SECRET not in err.value.message

    # Through the egress pool: the dead proxy is reported (benched after two failures) and
    # the job goes out through the live one.
    pools = EgressPools(
        EgressConfig.model_validate(
            {"pools": {"p": [dead, tinyproxy.url]}, "tier_defaults": {"browser": "p"}}
        )
    )
    outcomes: list[tuple[str, bool]] = []
    egress = EgressFetcher(
        fetcher, pools, "browser", lambda _p, label, ok: outcomes.append((label, ok))
    )
    for _ in range(2):
        resp = await egress.fetch(BrowserRequest(site.url("/headers")))
        assert "browser-egress" in _seen_headers(resp.body).get("via", "")
    assert (f"http://127.0.0.1:{dead.rsplit(':', 1)[1]}", False) in outcomes
    assert (f"http://127.0.0.1:{tinyproxy.port}", True) in outcomes
    assert SECRET not in caplog.text
