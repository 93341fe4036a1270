"""The pure parts of the browser tiers: options, error mapping, routing, profiles, slot choice."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from schemas import ErrorCode
from streams.browser._slots import Slot, choose_slot
from streams.browser.config import BrowserConfig
from streams.browser.errors import map_net_error, map_playwright_error
from streams.browser.fetcher import BrowserFetcher, _cookies_for, _Job, route_action
from streams.browser.profiles import profile_dir_name
from streams.browser.request import BrowserRequest, BrowserResponse
from streams.config import FetchConfig
from streams.errors import FatalError, TransientError
from streams.fetchers.base import FetchRequest, FetchResponse

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("token", "kind", "code"),
    [
        ("ERR_NAME_NOT_RESOLVED", FatalError, ErrorCode.DNS_ERROR),
        ("ERR_NAME_RESOLUTION_FAILED", TransientError, ErrorCode.DNS_ERROR),
        ("ERR_CONNECTION_REFUSED", TransientError, ErrorCode.CONNECTION_ERROR),
        ("ERR_CONNECTION_RESET", TransientError, ErrorCode.CONNECTION_ERROR),
        ("ERR_EMPTY_RESPONSE", TransientError, ErrorCode.CONNECTION_ERROR),
        ("ERR_TIMED_OUT", TransientError, ErrorCode.TIMEOUT),
        ("ERR_CONNECTION_TIMED_OUT", TransientError, ErrorCode.TIMEOUT),
        ("ERR_CERT_AUTHORITY_INVALID", FatalError, ErrorCode.TLS_ERROR),
        ("ERR_CERT_DATE_INVALID", FatalError, ErrorCode.TLS_ERROR),
        ("ERR_SSL_PROTOCOL_ERROR", FatalError, ErrorCode.TLS_ERROR),
        ("ERR_TOO_MANY_REDIRECTS", FatalError, ErrorCode.TOO_MANY_REDIRECTS),
        ("ERR_UNSAFE_PORT", FatalError, ErrorCode.INVALID_URL),
        ("ERR_CONTENT_DECODING_FAILED", FatalError, ErrorCode.DECODE_ERROR),
        ("ERR_SOMETHING_NEW", TransientError, ErrorCode.CONNECTION_ERROR),
    ],
)
def test_net_errors_map_to_our_types(token: str, kind: type, code: ErrorCode) -> None:
    err = map_net_error(token, "http://example.test/")
    assert type(err) is kind
    assert err.code is code
    assert token in err.message


def test_playwright_timeouts_map_by_type() -> None:
    err = map_playwright_error(PlaywrightTimeoutError("Timeout 30000ms exceeded."), "http://x/")
    assert isinstance(err, TransientError)
    assert err.code is ErrorCode.TIMEOUT


def test_playwright_errors_map_by_their_net_token_only() -> None:
    msg = "Page.goto: net::ERR_NAME_NOT_RESOLVED at http://nowhere.test/\nCall log: ..."
    err = map_playwright_error(PlaywrightError(msg), "http://nowhere.test/")
    assert isinstance(err, FatalError) and err.code is ErrorCode.DNS_ERROR
    # Words in the message mean nothing without a net:: token.
    other = map_playwright_error(PlaywrightError("name not resolved, timeout, TLS"), "http://x/")
    assert isinstance(other, TransientError) and other.code is ErrorCode.INTERNAL


def test_the_allow_verdict_comes_before_the_blocklist() -> None:
    assert route_action(False, "document", frozenset()) == "deny"
    assert route_action(False, "image", {"image"}) == "deny"
    assert route_action(True, "image", {"image", "font"}) == "block_resource"
    assert route_action(True, "document", {"image", "font", "media", "stylesheet"}) == "continue"
    assert route_action(True, "script", {"image"}) == "continue"


def test_profiles_are_per_tenant_and_unambiguous() -> None:
    a = profile_dir_name("tenant-a", "s1")
    assert a == profile_dir_name("tenant-a", "s1")
    assert len(a) == 64 and int(a, 16) >= 0
    assert a != profile_dir_name("tenant-b", "s1")
    assert profile_dir_name("a", "bc") != profile_dir_name("ab", "c")
    assert profile_dir_name('a", "b', "c") != profile_dir_name("a", 'b", "c')
    with pytest.raises(ValueError):
        profile_dir_name("", "s1")
    with pytest.raises(ValueError):
        profile_dir_name("t", "")


def test_browser_request_defaults_and_validation() -> None:
    req = BrowserRequest("http://example.test/")
    assert (req.wait_until, req.wait_for, req.screenshot, req.block_resources) == (
        "load",
        None,
        None,
        frozenset(),
    )
    listed = BrowserRequest("http://x/", block_resources=["image", "font", "image"])  # type: ignore[arg-type]
    assert listed.block_resources == frozenset({"image", "font"})
    bad: list[dict[str, Any]] = [
        {"wait_until": "commit"},
        {"screenshot": "pdf"},
        {"block_resources": frozenset({"script"})},
        {"session_id": "s1"},  # without a tenant
    ]
    for kw in bad:
        with pytest.raises(ValueError):
            BrowserRequest("http://x/", **kw)


def test_a_plain_fetch_request_becomes_a_browser_request() -> None:
    plain = FetchRequest("http://x/", {"X-A": "1"}, timeout_s=5, max_body_bytes=10)
    req = BrowserRequest.of(plain)
    assert (req.url, dict(req.headers), req.timeout_s, req.max_body_bytes) == (
        "http://x/",
        {"X-A": "1"},
        5,
        10,
    )
    assert req.wait_until == "load"
    already = BrowserRequest("http://y/", screenshot="full")
    assert BrowserRequest.of(already) is already
    assert isinstance(already, FetchRequest)


def test_browser_responses_are_fetch_responses_with_a_screenshot() -> None:
    resp = BrowserResponse("u", "u", 200, {}, b"", "text/html", 0)
    assert isinstance(resp, FetchResponse)
    assert resp.screenshot is None


def test_cookie_headers_become_cookies_scoped_to_the_url() -> None:
    assert _cookies_for("http://x.test/a", "a=1; b=two=2;bad; =x") == [
        {"name": "a", "value": "1", "url": "http://x.test/a"},
        {"name": "b", "value": "two=2", "url": "http://x.test/a"},
    ]


class _FakeBrowser:
    pass


def _slot(active: int = 0, **kw: bool) -> Slot:
    return Slot(_FakeBrowser(), active=active, **kw)  # type: ignore[arg-type]


def test_the_least_busy_browser_with_room_is_chosen() -> None:
    busy, idle, full = _slot(3), _slot(1), _slot(4)
    assert choose_slot([busy, idle, full], per_browser=4) is idle
    assert choose_slot([full, _slot(4)], per_browser=4) is None
    dead, retiring = _slot(0, dead=True), _slot(0, retiring=True)
    assert choose_slot([dead, retiring, busy], per_browser=4) is busy
    assert choose_slot([], per_browser=4) is None


async def test_only_http_urls_are_rendered() -> None:
    fetcher = BrowserFetcher(FetchConfig(), BrowserConfig())  # never started: no browser needed
    for url in ("file:///etc/passwd", "data:text/html,<p>x", "chrome://settings", "about:blank"):
        with pytest.raises(FatalError) as err:
            await fetcher.fetch(FetchRequest(url))
        assert err.value.code is ErrorCode.INVALID_URL


def test_browser_config_is_frozen_with_sane_defaults() -> None:
    cfg = BrowserConfig()
    assert cfg.pages_per_browser == 100
    assert cfg.contexts_per_browser >= 1 and cfg.browsers >= 1
    with pytest.raises(ValueError):
        cfg.browsers = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        BrowserConfig(browsers=0)


def test_which_jobs_run_in_a_context_kept_for_their_tenant() -> None:
    def kept(request: BrowserRequest, **cfg: int) -> bool:
        fetcher = BrowserFetcher(FetchConfig(), BrowserConfig(**cfg))  # never started
        return fetcher._keeps_context(request, _Job.of(request))

    url = "https://example.com/"
    assert kept(BrowserRequest(url, tenant="t"))
    # A Cookie header becomes cookies of the context (cleared after the job), not a route.
    assert kept(BrowserRequest(url, tenant="t", headers={"Cookie": "a=1"}))
    assert not kept(BrowserRequest(url))  # no tenant: nothing to key a context by
    assert not kept(BrowserRequest(url, tenant="t"), jobs_per_context=1)
    assert not kept(BrowserRequest(url, tenant="t", session_id="s"))  # its persistent profile
    # A route handler is installed on the whole context: such jobs get a fresh one.
    assert not kept(BrowserRequest(url, tenant="t", block_resources=frozenset({"image"})))
    assert not kept(BrowserRequest(url, tenant="t", headers={"X-Job": "1"}))
