"""streams.fetchers.http.HttpFetcher against an in-process httpx.MockTransport (no network)."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from schemas import ErrorCode
from streams.config import FetchConfig
from streams.errors import FatalError, FetchError, TransientError
from streams.fetchers.base import FetchRequest, FetchResponse
from streams.fetchers.http import HttpFetcher
from streams.tier.outcome import Kind, classify_response

pytestmark = pytest.mark.unit

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


async def fetch(
    handler: Handler, url: str = "http://example.test/", config: FetchConfig | None = None, **kw
) -> FetchResponse:
    async with HttpFetcher(config or FetchConfig(), transport=httpx.MockTransport(handler)) as f:
        return await f.fetch(FetchRequest(url=url, **kw))


async def fetch_error(handler: Handler, **kw) -> FetchError:
    with pytest.raises(FetchError) as info:
        await fetch(handler, **kw)
    return info.value


class Stream(httpx.AsyncByteStream):
    """A response body we control: records whether it was read; optional delay per chunk."""

    def __init__(self, parts: list[bytes], delay_s: float = 0.0) -> None:
        self.parts = parts
        self.delay_s = delay_s
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            self.read += 1
            yield part

    async def aclose(self) -> None:
        pass


def reply(
    status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None
) -> httpx.Response:
    """A streamed response, as a real transport gives. (``httpx.Response(content=...)`` is
    pre-read, and the fetcher's ``aiter_raw`` then raises httpx.StreamConsumed.)"""
    headers = dict(headers or {})
    if body:
        headers.setdefault("Content-Length", str(len(body)))
    return httpx.Response(status, headers=headers, stream=Stream([body] if body else []))


async def test_200_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return reply(200, b"<html>hi</html>", {"Content-Type": "text/html", "X-Thing": "1"})

    resp = await fetch(handler, url="http://example.test/page?q=1")
    assert resp.status == 200
    assert resp.body == b"<html>hi</html>"
    assert resp.url == "http://example.test/page?q=1"
    assert resp.final_url == "http://example.test/page?q=1"
    assert resp.redirects == 0
    assert resp.content_type == "text/html"
    assert resp.headers["x-thing"] == "1"
    assert all(k == k.lower() for k in resp.headers)
    assert resp.wire_bytes == len(b"<html>hi</html>")


async def test_error_status_is_a_response() -> None:
    resp = await fetch(lambda r: reply(404, b"nope"))
    assert resp.status == 404
    assert resp.body == b"nope"


async def test_429_retry_after_reaches_classification() -> None:
    resp = await fetch(lambda r: reply(429, headers={"Retry-After": "7"}))
    outcome = classify_response(resp)
    assert outcome.kind is Kind.TRANSIENT
    assert outcome.retry_after_s == 7.0


async def test_gzip_body_is_decoded() -> None:
    body = b"compressible " * 1000
    wire = gzip.compress(body)

    def handler(request: httpx.Request) -> httpx.Response:
        return reply(200, wire, {"Content-Encoding": "gzip"})

    resp = await fetch(handler)
    assert resp.body == body
    assert resp.wire_bytes == len(wire)


async def test_request_headers_user_agent_and_accept_encoding() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply(200)

    config = FetchConfig(user_agent="UnitTestBot/9.9 (+https://example.test/bot)")
    await fetch(handler, config=config, headers={"Accept-Language": "de"})
    (request,) = seen
    assert request.method == "GET"
    assert request.headers["user-agent"] == config.user_agent
    assert request.headers["accept-language"] == "de"
    accepted = {e.strip() for e in request.headers["accept-encoding"].split(",")}
    assert accepted <= {"gzip", "deflate", "identity"}  # nothing the decoder cannot bound


async def test_default_user_agent() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["user-agent"])
        return reply(200)

    await fetch(handler)
    assert seen == ["Scrapifie/0.1 (+https://scrapifie.dev/bot)"]


async def test_user_agent_names_the_configured_contact_url() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["user-agent"])
        return reply(200)

    config = FetchConfig(contact_url="https://ops.example.org/crawler")
    async with HttpFetcher(config, transport=httpx.MockTransport(handler)) as fetcher:
        await fetcher.fetch(FetchRequest(url="http://example.test/"))
    assert seen == ["Scrapifie/0.1 (+https://ops.example.org/crawler)"]


# --- redirects -------------------------------------------------------------------------------


async def test_redirects_are_followed() -> None:
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers["user-agent"]))
        if request.url.path == "/start":
            return reply(301, headers={"Location": "/middle"})
        if request.url.path == "/middle":
            return reply(302, headers={"Location": "https://other.test/end?x=1"})
        return reply(200, b"final")

    config = FetchConfig(user_agent="RedirectBot/1")
    resp = await fetch(handler, url="http://example.test/start", config=config)
    assert resp.status == 200
    assert resp.body == b"final"
    assert resp.url == "http://example.test/start"
    assert resp.final_url == "https://other.test/end?x=1"
    assert resp.redirects == 2
    assert seen == [
        ("http://example.test/start", "RedirectBot/1"),
        ("http://example.test/middle", "RedirectBot/1"),
        ("https://other.test/end?x=1", "RedirectBot/1"),
    ]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_each_redirect_status_is_followed(status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/a":
            return reply(status, headers={"Location": "/b"})
        return reply(200, b"b")

    resp = await fetch(handler, url="http://example.test/a")
    assert (resp.final_url, resp.redirects, resp.body) == ("http://example.test/b", 1, b"b")


async def test_redirect_without_location_is_returned() -> None:
    resp = await fetch(lambda r: reply(301))
    assert resp.status == 301
    assert resp.redirects == 0


async def test_exactly_max_redirects_is_allowed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        n = int(request.url.path.strip("/"))
        if n < 3:
            return reply(302, headers={"Location": f"/{n + 1}"})
        return reply(200)

    resp = await fetch(handler, url="http://example.test/0", config=FetchConfig(max_redirects=3))
    assert resp.redirects == 3
    assert resp.final_url == "http://example.test/3"


async def test_redirect_loop_is_too_many_redirects() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return reply(302, headers={"Location": "/loop"})

    err = await fetch_error(
        handler, url="http://example.test/loop", config=FetchConfig(max_redirects=4)
    )
    assert isinstance(err, FatalError)
    assert err.code is ErrorCode.TOO_MANY_REDIRECTS
    assert calls == 5  # the first request and max_redirects hops, no more


async def test_zero_max_redirects() -> None:
    err = await fetch_error(
        lambda r: reply(301, headers={"Location": "/x"}), config=FetchConfig(max_redirects=0)
    )
    assert err.code is ErrorCode.TOO_MANY_REDIRECTS


@pytest.mark.parametrize("location", ["ftp://example.test/file", "file:///etc/passwd"])
async def test_redirect_to_unsupported_scheme_is_invalid_url(location: str) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return reply(302, headers={"Location": location})

    err = await fetch_error(handler)
    assert isinstance(err, FatalError)
    assert err.code is ErrorCode.INVALID_URL
    assert calls == ["http://example.test/"]


async def test_credentials_are_not_forwarded_to_another_origin() -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers.get("authorization")
        if request.url.host == "example.test":
            return reply(302, headers={"Location": "http://evil.test/"})
        return reply(200)

    await fetch(handler, headers={"Authorization": "Bearer secret"})
    assert seen["example.test"] == "Bearer secret"
    assert seen["evil.test"] is None


async def test_cookies_never_reach_another_job() -> None:
    """One worker fetches for every tenant: a cookie a page sets must not ride along with the
    next job to that site (httpx.AsyncClient's jar did exactly that)."""
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return reply(200, headers={"Set-Cookie": "sid=tenant-a-session; Path=/"})

    async with HttpFetcher(FetchConfig(), transport=httpx.MockTransport(handler)) as fetcher:
        await fetcher.fetch(FetchRequest(url="http://example.test/a"))
        await fetcher.fetch(FetchRequest(url="http://example.test/b"))
    assert seen == [None, None]


async def test_cookie_set_by_a_redirect_hop_reaches_the_next_hop_of_the_same_job() -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = request.headers.get("cookie")
        if request.url.path == "/start":
            return reply(302, headers={"Location": "/check", "Set-Cookie": "probe=1; Path=/"})
        return reply(200, body=b"ok")

    resp = await fetch(handler, url="http://example.test/start")
    assert resp.body == b"ok"
    assert seen == {"/start": None, "/check": "probe=1"}


# --- size limits -----------------------------------------------------------------------------


async def test_content_length_over_cap_fails_before_reading_the_body() -> None:
    stream = Stream([b"x" * 100] * 100)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "10000"}, stream=stream)

    err = await fetch_error(handler, config=FetchConfig(max_body_bytes=1000))
    assert isinstance(err, FatalError)
    assert err.code is ErrorCode.TOO_LARGE
    assert stream.read == 0


async def test_request_max_body_bytes_overrides_config() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return reply(200, b"x" * 500)

    err = await fetch_error(handler, max_body_bytes=100)
    assert err.code is ErrorCode.TOO_LARGE
    assert (await fetch(handler, config=FetchConfig(max_body_bytes=100), max_body_bytes=500)).body


async def test_body_without_content_length_over_cap() -> None:
    stream = Stream([b"x" * 400] * 50)  # 20 000 bytes, chunked

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=stream)

    err = await fetch_error(handler, config=FetchConfig(max_body_bytes=1000))
    assert err.code is ErrorCode.TOO_LARGE
    assert stream.read < 50  # stopped reading once over the cap


async def test_body_exactly_at_cap() -> None:
    resp = await fetch(lambda r: reply(200, b"x" * 1000), config=FetchConfig(max_body_bytes=1000))
    assert len(resp.body) == 1000


async def test_gzip_body_over_cap_is_too_large() -> None:
    wire = gzip.compress(b"\x00" * 5_000_000)  # ~5 KB on the wire, 5 MB decoded

    def handler(request: httpx.Request) -> httpx.Response:
        return reply(200, wire, {"Content-Encoding": "gzip"})

    assert len(wire) < 100_000  # Content-Length is under the cap: only decoding can catch it
    err = await fetch_error(handler, config=FetchConfig(max_body_bytes=100_000))
    assert isinstance(err, FatalError)
    assert err.code is ErrorCode.TOO_LARGE


async def test_unsupported_content_encoding_is_decode_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return reply(200, b"\x0b\x02\x80", {"Content-Encoding": "br"})

    err = await fetch_error(handler)
    assert err.code is ErrorCode.DECODE_ERROR


# --- timeouts and connection errors ----------------------------------------------------------


async def test_slow_server_is_timeout() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return reply(200)

    started = time.monotonic()
    err = await fetch_error(handler, config=FetchConfig(timeout_s=0.2))
    assert time.monotonic() - started < 2
    assert isinstance(err, TransientError)
    assert err.code is ErrorCode.TIMEOUT


async def test_request_timeout_overrides_config() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return reply(200)

    started = time.monotonic()
    err = await fetch_error(handler, config=FetchConfig(timeout_s=30), timeout_s=0.2)
    assert time.monotonic() - started < 2
    assert err.code is ErrorCode.TIMEOUT


async def test_dripping_body_hits_the_overall_deadline() -> None:
    # each chunk arrives well within any per-read timeout, but the whole body takes 5 s
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Stream([b"x"] * 100, delay_s=0.05))

    started = time.monotonic()
    err = await fetch_error(handler, config=FetchConfig(timeout_s=0.3))
    assert time.monotonic() - started < 2
    assert isinstance(err, TransientError)
    assert err.code is ErrorCode.TIMEOUT


async def test_connect_error_is_transient_connection_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    err = await fetch_error(handler)
    assert isinstance(err, TransientError)
    assert err.code is ErrorCode.CONNECTION_ERROR


async def test_unknown_host_is_fatal_dns_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        except socket.gaierror as exc:
            raise httpx.ConnectError("dns", request=request) from exc

    err = await fetch_error(handler)
    assert isinstance(err, FatalError)
    assert err.code is ErrorCode.DNS_ERROR


async def test_tls_failure_is_fatal_tls_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed")
        except ssl.SSLError as exc:
            raise httpx.ConnectError("tls", request=request) from exc

    err = await fetch_error(handler, url="https://example.test/")
    assert isinstance(err, FatalError)
    assert err.code is ErrorCode.TLS_ERROR


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadError("reset by peer"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message"),
        httpx.ReadTimeout("read timed out"),
    ],
)
async def test_other_transport_errors_are_transient(exc: httpx.HTTPError) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    err = await fetch_error(handler)
    assert isinstance(err, TransientError)
    expected = (
        ErrorCode.TIMEOUT if isinstance(exc, httpx.TimeoutException) else ErrorCode.CONNECTION_ERROR
    )
    assert err.code is expected


# --- what the fetcher sends and keeps ----------------------------------------------------------


async def test_a_job_cannot_set_the_host_header() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["host"])
        return reply(200)

    await fetch(handler, url="http://example.test/", headers={"Host": "internal.test"})
    assert seen == ["example.test"]


async def test_a_jobs_header_replaces_a_default_whatever_its_case() -> None:
    seen: list[list[tuple[str, str]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append([(k, v) for k, v in request.headers.multi_items() if k == "accept"])
        return reply(200)

    await fetch(handler, headers={"ACCEPT": "text/html"})
    assert seen == [[("accept", "text/html")]]


async def test_repeated_response_headers_are_joined() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Vary", "Accept")]
        return httpx.Response(200, headers=headers, stream=Stream([]))

    resp = await fetch(handler)
    assert resp.headers["set-cookie"] == "a=1, b=2"
    assert resp.headers["vary"] == "Accept"


async def test_unparseable_url_is_invalid_url() -> None:
    err = await fetch_error(lambda r: reply(200), url="http://[::1/")
    assert isinstance(err, FatalError)
    assert err.code is ErrorCode.INVALID_URL


@pytest.mark.parametrize(
    "location", ["http://[bad/", "http://a b/", "http://user:pw@example.test/"]
)
async def test_redirect_to_an_unusable_url_is_invalid_url(location: str) -> None:
    err = await fetch_error(lambda r: reply(302, headers={"Location": location}))
    assert isinstance(err, FatalError)
    assert err.code is ErrorCode.INVALID_URL
