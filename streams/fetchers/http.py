"""The http tier: httpx, redirects followed by hand, raw bytes decoded within bounds.

Invariants:
- one overall deadline (``asyncio.timeout``) covers every hop, headers and body, so a server
  dripping a byte a second still ends at ``timeout_s`` (httpx's read timeout is per chunk);
- decoded bodies never exceed ``max_body_bytes`` (checked from Content-Length before reading,
  and while decoding);
- redirects are followed here, one hop at a time, so every hop can be checked (SSRF, limits).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from types import TracebackType
from typing import Self

import httpx
import idna

from schemas import ErrorCode
from streams.config import FetchConfig
from streams.decompress import BoundedDecoder, TooLarge, parse_content_encoding
from streams.errors import FatalError, FetchError, TransientError
from streams.fetchers.base import FetchRequest, FetchResponse
from streams.fetchers.transport import PROXY_EXTENSION, AiohttpTransport
from streams.ssrf import EgressGuard

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})


class HttpFetcher:
    """httpx requests and responses over our aiohttp transport (SSRF guard as its resolver),
    sent straight to the transport: no ``httpx.AsyncClient``. The client would add nothing we
    use (we follow redirects by hand, bound time with one deadline, send no auth) and one thing
    we must not have: a cookie jar shared by every job of the worker, which sent a cookie one
    tenant's page set to another tenant's job on the same site. Skipping it also saves ~0.1 ms
    per page. ``transport`` may be injected: unit tests use httpx.MockTransport, which bypasses
    the guard."""

    def __init__(
        self,
        config: FetchConfig,
        transport: httpx.AsyncBaseTransport | None = None,
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
        self.transport = transport
        self._headers = {
            "User-Agent": config.effective_user_agent,
            "Accept": "*/*",
            "Accept-Encoding": "gzip, deflate",  # what BoundedDecoder can bound
        }

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
        except FetchError:
            raise
        except httpx.ConnectTimeout as exc:
            raise TransientError(ErrorCode.TIMEOUT, "connect timed out") from exc
        except httpx.TimeoutException as exc:
            raise TransientError(ErrorCode.TIMEOUT, f"timed out: {type(exc).__name__}") from exc
        except httpx.ConnectError as exc:
            raise _map_connect_error(exc) from exc
        except httpx.RemoteProtocolError as exc:
            raise TransientError(ErrorCode.CONNECTION_ERROR, f"protocol error: {exc}") from exc
        except httpx.NetworkError as exc:
            raise TransientError(ErrorCode.CONNECTION_ERROR, f"network error: {exc}") from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, idna.IDNAError, UnicodeError) as exc:
            raise FatalError(ErrorCode.INVALID_URL, f"invalid URL: {exc}") from exc
        except httpx.HTTPError as exc:
            raise TransientError(ErrorCode.HTTP_ERROR, f"{type(exc).__name__}: {exc}") from exc

    async def _fetch(self, request: FetchRequest) -> FetchResponse:
        cap = request.max_body_bytes or self._config.max_body_bytes
        url = httpx.URL(request.url)
        headers = httpx.Headers(self._headers)
        headers.update(request.headers)  # the job's headers win, case-insensitively
        extensions = {PROXY_EXTENSION: request.proxy} if request.proxy else None
        jar: httpx.Cookies | None = None  # this job's own: cookies set along its redirects
        for hop in range(self._config.max_redirects + 1):
            req = httpx.Request("GET", url, headers=headers, extensions=extensions)
            if jar is not None:
                jar.set_cookie_header(req)
            resp = await self.transport.handle_async_request(req)
            resp.request = req
            try:
                location = resp.headers.get("location")
                if resp.status_code in _REDIRECTS and location:
                    if "set-cookie" in resp.headers:
                        jar = jar or httpx.Cookies()
                        jar.extract_cookies(resp)
                    nxt = _next_hop(resp.url, location)
                    if _origin(nxt) != _origin(url):
                        # Like browsers and httpx itself: credentials stay with their origin.
                        headers = httpx.Headers(
                            [(k, v) for k, v in headers.multi_items() if k not in _CREDENTIALS]
                        )
                    url = nxt
                    continue
                return await _read(resp, request.url, cap, hop)
            finally:
                await resp.aclose()
        raise FatalError(
            ErrorCode.TOO_MANY_REDIRECTS, f"more than {self._config.max_redirects} redirects"
        )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def _next_hop(current: httpx.URL, location: str) -> httpx.URL:
    nxt = current.join(location)
    if nxt.scheme not in ("http", "https"):
        raise FatalError(ErrorCode.INVALID_URL, f"redirect to unsupported scheme {nxt.scheme!r}")
    return nxt


async def _read(resp: httpx.Response, url: str, cap: int, redirects: int) -> FetchResponse:
    declared = resp.headers.get("content-length")
    encodings = parse_content_encoding(resp.headers.get("content-encoding"))
    if declared and declared.isdigit() and not encodings and int(declared) > cap:
        raise TooLarge(cap)
    decoder = BoundedDecoder(encodings, cap)
    async for chunk in resp.aiter_raw():
        decoder.feed(chunk)
    decoder.finish()
    return FetchResponse(
        url=url,
        final_url=str(resp.url),
        status=resp.status_code,
        headers={k.lower(): v for k, v in resp.headers.items()},
        body=decoder.result(),
        content_type=resp.headers.get("content-type"),
        wire_bytes=decoder.raw_bytes,
        redirects=redirects,
    )


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
