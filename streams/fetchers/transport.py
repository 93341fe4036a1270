"""The http tier's transport: aiohttp, with the SSRF guard as aiohttp's DNS resolver.

Why not httpx's own transport: it is slow under high concurrency here (PITFALLS: ~250 pages/s at
64 in flight vs several thousand for aiohttp), and aiohttp's connector takes a resolver, which is
the one place where "resolve, check every answer, connect to exactly those answers" can be done
without a second lookup. Bodies are passed through raw (``auto_decompress=False``); the fetcher
decodes them within bounds. No cookies are kept between requests.

Errors leave this module as our FetchError types (mapped by exception type, most specific first),
so callers never see aiohttp or httpx. :class:`HttpxTransport` puts any httpx transport behind the
same small interface (unit tests use ``httpx.MockTransport``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, Self

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, MultiMapping
from yarl import URL

from schemas import ErrorCode
from streams.errors import FatalError, FetchError, TransientError
from streams.fetchers.ssrf import EgressGuard, ip_literal

PROXY_EXTENSION = "scrapifie.proxy"  # request extension: proxy URL for this request


class GuardResolver(AbstractResolver):
    """aiohttp resolver returning only addresses the guard accepts."""

    def __init__(self, guard: EgressGuard) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._guard.resolve(host, port)
        return [
            {"hostname": host, "host": addr, "port": port, "family": fam, "proto": 0, "flags": 0}
            for fam, addr in answers
        ]

    async def close(self) -> None:
        return None


class Reply(Protocol):
    """One response as the fetcher needs it: status, headers, and the raw body in chunks."""

    status: int
    headers: MultiMapping[str]

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    """Send one GET, without following redirects, raising only :class:`FetchError` types.

    ``headers`` are sent as given (no Host: the transport writes it from ``url``); ``proxy`` is a
    forward proxy URL for this request, or None.
    """

    async def send(self, url: URL, headers: Mapping[str, str], proxy: str | None) -> Reply: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


class AiohttpTransport:
    """The production transport: one aiohttp session. Create and close inside a running loop.

    The fetcher talks to it in yarl URLs and multidict headers, aiohttp's own types, so a page
    costs no conversion: httpx request and response objects around each aiohttp call were ~15%
    of the worker's CPU under load (URL parsing alone ~11 us a request).
    """

    def __init__(
        self,
        guard: EgressGuard,
        *,
        max_connections: int,
        connect_timeout_s: float,
        max_header_bytes: int = 16 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._guard = guard
        self.resolver = GuardResolver(guard)
        connector = aiohttp.TCPConnector(
            resolver=self.resolver,
            limit=max_connections,
            limit_per_host=0,
            use_dns_cache=True,
            ttl_dns_cache=60,
            ssl=ssl_context or ssl.create_default_context(),
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s),
            max_line_size=max_header_bytes,
            max_field_size=max_header_bytes,
            trust_env=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def send(self, url: URL, headers: Mapping[str, str], proxy: str | None) -> Reply:
        host = url.raw_host or ""
        literal = ip_literal(host)
        if proxy is not None or literal is not None:
            # aiohttp skips the resolver for IP literals, so they are checked here. Through a proxy
            # the target is resolved by the proxy: checked here too, but that lookup cannot be
            # pinned (see README, egress pools).
            await self._guard.resolve(host, url.port or 80)
        if literal is not None and literal.version == 4 and host != str(literal):
            # A numeric spelling (127.1, 2130706433) goes out as the dotted quad the guard
            # judged, as browsers send it: aiohttp refuses some spellings and hands others to
            # the resolver, depending on its version.
            url = url.with_host(str(literal))
        try:
            resp = await self._session.request(
                "GET", url, headers=headers, allow_redirects=False, proxy=proxy
            )
        except FetchError:
            raise
        except BaseException as exc:
            raise _map(exc) from exc
        return _AiohttpReply(resp)

    async def aclose(self) -> None:
        await self._session.close()


class _AiohttpReply:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: MultiMapping[str] = resp.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError | GeneratorExit):
                raise
            raise _map(exc) from exc

    async def aclose(self) -> None:
        self._resp.release()


class HttpxTransport:
    """Any httpx transport (unit tests use ``httpx.MockTransport``) behind :class:`Transport`,
    its errors mapped to ours as httpx names them."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport

    async def __aenter__(self) -> Self:
        await self.transport.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.transport.aclose()

    async def send(self, url: URL, headers: Mapping[str, str], proxy: str | None) -> Reply:
        try:
            request = httpx.Request(
                "GET",
                str(url),
                headers=list(headers.items()),
                extensions={PROXY_EXTENSION: proxy} if proxy else None,
            )
            resp = await self.transport.handle_async_request(request)
        except httpx.HTTPError as exc:
            raise _map_httpx(exc) from exc
        return _HttpxReply(resp)


class _HttpxReply:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status = resp.status_code
        self.headers: MultiMapping[str] = CIMultiDict(resp.headers.multi_items())

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise _map_httpx(exc) from exc

    async def aclose(self) -> None:
        await self._resp.aclose()


def _map(exc: BaseException) -> BaseException:
    """aiohttp exception → our FetchError, most specific type first."""
    if isinstance(exc, asyncio.CancelledError):
        return exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return FatalError(ErrorCode.TLS_ERROR, f"TLS certificate rejected: {exc.certificate_error}")
    if isinstance(exc, aiohttp.ClientSSLError):
        return FatalError(ErrorCode.TLS_ERROR, f"TLS handshake failed: {exc}")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return TransientError(ErrorCode.PROXY_ERROR, f"cannot connect to proxy: {exc}")
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return TransientError(ErrorCode.PROXY_ERROR, f"proxy refused: HTTP {exc.status}")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return TransientError(ErrorCode.DNS_ERROR, f"DNS lookup failed: {exc}")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransientError(ErrorCode.TIMEOUT, "connect timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransientError(ErrorCode.CONNECTION_ERROR, f"connect failed: {exc}")
    if isinstance(exc, aiohttp.ClientResponseError):
        # Malformed status line or headers (including headers over the size limit).
        return FatalError(ErrorCode.INVALID_RESPONSE, f"invalid HTTP response: {exc.message}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransientError(ErrorCode.CONNECTION_ERROR, f"body transfer failed: {exc}")
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return TransientError(ErrorCode.TIMEOUT, "timed out")
    if isinstance(exc, aiohttp.InvalidURL | ValueError):
        return FatalError(ErrorCode.INVALID_URL, f"invalid URL: {exc}")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return TransientError(ErrorCode.CONNECTION_ERROR, f"{type(exc).__name__}: {exc}")
    return exc


def _map_httpx(exc: httpx.HTTPError) -> FetchError:
    """httpx exception → our FetchError, most specific type first."""
    if isinstance(exc, httpx.ConnectTimeout):
        return TransientError(ErrorCode.TIMEOUT, "connect timed out")
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(ErrorCode.TIMEOUT, f"timed out: {type(exc).__name__}")
    if isinstance(exc, httpx.ConnectError):
        return _map_connect_error(exc)
    if isinstance(exc, httpx.RemoteProtocolError):
        return TransientError(ErrorCode.CONNECTION_ERROR, f"protocol error: {exc}")
    if isinstance(exc, httpx.NetworkError):
        return TransientError(ErrorCode.CONNECTION_ERROR, f"network error: {exc}")
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return FatalError(ErrorCode.INVALID_URL, f"invalid URL: {exc}")
    return TransientError(ErrorCode.HTTP_ERROR, f"{type(exc).__name__}: {exc}")


def _map_connect_error(exc: httpx.ConnectError) -> FetchError:
    cause: BaseException | None = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return FatalError(ErrorCode.TLS_ERROR, f"TLS handshake failed: {cause}")
        if isinstance(cause, socket.gaierror):
            if cause.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                return FatalError(ErrorCode.DNS_ERROR, f"host not found: {cause}")
            return TransientError(ErrorCode.DNS_ERROR, f"DNS lookup failed: {cause}")
        cause = cause.__cause__ or cause.__context__
    return TransientError(ErrorCode.CONNECTION_ERROR, f"connect failed: {exc}")
