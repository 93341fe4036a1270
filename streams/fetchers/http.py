"""The http tier: GETs over aiohttp, redirects followed by hand, raw bytes decoded within bounds.

Invariants:
- one overall deadline (``asyncio.timeout``) covers every hop, headers and body, so a server
  dripping a byte a second still ends at ``timeout_s`` (a transport's read timeout is per chunk);
- decoded bodies never exceed ``max_body_bytes`` (checked from Content-Length before reading,
  and while decoding);
- redirects are followed here, one hop at a time, so every hop can be checked (SSRF, limits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import TracebackType
from typing import Self

import httpx
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from schemas import ErrorCode
from schemas.urls import InvalidURL, validate_url
from streams.config import FetchConfig
from streams.errors import FatalError, TransientError
from streams.fetchers.base import FetchRequest, FetchResponse
from streams.fetchers.decompress import BoundedDecoder, TooLarge, parse_content_encoding
from streams.fetchers.ssrf import EgressGuard
from streams.fetchers.transport import AiohttpTransport, HttpxTransport, Reply, Transport

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})


class HttpFetcher:
    """GETs over our aiohttp transport (SSRF guard as its resolver): no ``httpx.AsyncClient``
    and no ``aiohttp`` redirect handling. The client would add nothing we use (we follow
    redirects by hand, bound time with one deadline, send no auth) and one thing we must not
    have: a cookie jar shared by every job of the worker, which sent a cookie one tenant's page
    set to another tenant's job on the same site. ``transport`` may be injected: any
    :class:`~streams.fetchers.transport.Transport`, or an httpx transport (unit tests use
    httpx.MockTransport, which bypasses the guard)."""

    def __init__(
        self,
        config: FetchConfig,
        transport: Transport | httpx.AsyncBaseTransport | None = None,
        guard: EgressGuard | None = None,
    ) -> None:
        self._config = config
        if transport is None:
            transport = AiohttpTransport(
                guard or EgressGuard(config.allow_private),
                max_connections=config.max_connections,
                connect_timeout_s=config.connect_timeout_s,
                max_header_bytes=config.max_header_bytes,
            )
        elif isinstance(transport, httpx.AsyncBaseTransport):
            transport = HttpxTransport(transport)
        self.transport: Transport = transport
        self._headers: CIMultiDictProxy[str] = CIMultiDictProxy(
            CIMultiDict(
                {
                    "User-Agent": config.effective_user_agent,
                    "Accept": "*/*",
                    "Accept-Encoding": "gzip, deflate",  # what BoundedDecoder can bound
                }
            )
        )

    async def __aenter__(self) -> Self:
        await self.transport.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.transport.__aexit__(et, e, tb)

    async def fetch(self, request: FetchRequest) -> FetchResponse:
        timeout_s = request.timeout_s or self._config.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await self._fetch(request)
        except TimeoutError as exc:
            raise TransientError(
                ErrorCode.TIMEOUT, f"no complete response within {timeout_s:g}s"
            ) from exc

    def _request_headers(self, request: FetchRequest) -> Mapping[str, str]:
        if not request.headers:
            return self._headers
        headers = CIMultiDict(self._headers)
        for name, value in request.headers.items():
            if name.lower() != "host":  # the transport writes Host from the URL
                headers[name] = value  # the job's headers win, case-insensitively
        return headers

    async def _fetch(self, request: FetchRequest) -> FetchResponse:
        cap = request.max_body_bytes or self._config.max_body_bytes
        url = _parse(request.url)
        headers = self._request_headers(request)
        jar: httpx.Cookies | None = None  # this job's own: cookies set along its redirects
        for hop in range(self._config.max_redirects + 1):
            sent = headers if jar is None else _with_cookies(headers, jar, url)
            reply = await self.transport.send(url, sent, request.proxy)
            try:
                location = reply.headers.get("location")
                if reply.status in _REDIRECTS and location:
                    cookies = reply.headers.getall("set-cookie", [])
                    if cookies:
                        jar = jar or httpx.Cookies()
                        _keep_cookies(jar, url, reply.status, cookies)
                    nxt = _next_hop(url, location)
                    if _origin(nxt) != _origin(url):
                        # Like browsers and httpx itself: credentials stay with their origin.
                        headers = CIMultiDict(
                            (k, v) for k, v in headers.items() if k.lower() not in _CREDENTIALS
                        )
                    url = nxt
                    continue
                return await _read(reply, request.url, str(url), cap, hop)
            finally:
                await reply.aclose()
        raise FatalError(
            ErrorCode.TOO_MANY_REDIRECTS, f"more than {self._config.max_redirects} redirects"
        )


def _parse(url: str) -> URL:
    try:
        return URL(url)
    except ValueError as exc:  # idna's and other UnicodeErrors included
        raise FatalError(ErrorCode.INVALID_URL, f"invalid URL: {exc}") from exc


def _origin(url: URL) -> tuple[str, str | None, int | None]:
    return (url.scheme, url.raw_host, url.port)


def _next_hop(current: URL, location: str) -> URL:
    """The redirect target, held to the rules of a job's URL (http(s), a valid host, no
    user:password@)."""
    nxt = current.join(_parse(location))
    try:
        return URL(validate_url(str(nxt)), encoded=True)
    except InvalidURL as exc:
        raise FatalError(ErrorCode.INVALID_URL, f"redirect to an invalid URL: {exc}") from exc


def _keep_cookies(jar: httpx.Cookies, url: URL, status: int, set_cookies: list[str]) -> None:
    """Store a redirect hop's Set-Cookie headers in the job's jar (the standard library's
    cookie rules, through httpx; only redirects that set cookies get here)."""
    response = httpx.Response(
        status,
        headers=[("set-cookie", c) for c in set_cookies],
        request=httpx.Request("GET", str(url)),
    )
    jar.extract_cookies(response)


def _with_cookies(headers: Mapping[str, str], jar: httpx.Cookies, url: URL) -> Mapping[str, str]:
    """``headers`` plus the jar's Cookie header for ``url``; a Cookie the job set wins."""
    if "cookie" in headers:
        return headers
    probe = httpx.Request("GET", str(url))
    jar.set_cookie_header(probe)
    cookie = probe.headers.get("cookie")
    if cookie is None:
        return headers
    with_cookie = CIMultiDict(headers)
    with_cookie["Cookie"] = cookie
    return with_cookie


async def _read(reply: Reply, url: str, final_url: str, cap: int, redirects: int) -> FetchResponse:
    headers: dict[str, str] = {}
    for name, value in reply.headers.items():
        key = name.lower()
        # Repeated fields are joined, as HTTP allows (Set-Cookie too, as httpx did).
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    declared = headers.get("content-length")
    encodings = parse_content_encoding(headers.get("content-encoding"))
    if declared and declared.isdigit() and not encodings and int(declared) > cap:
        raise TooLarge(cap)
    decoder = BoundedDecoder(encodings, cap)
    async for chunk in reply.chunks():
        decoder.feed(chunk)
    decoder.finish()
    return FetchResponse(
        url=url,
        final_url=final_url,
        status=reply.status,
        headers=headers,
        body=decoder.result(),
        content_type=headers.get("content-type"),
        wire_bytes=decoder.raw_bytes,
        redirects=redirects,
    )
