"""The guard proxy: a forward proxy on 127.0.0.1 that every Chromium connection goes through.

Chromium follows redirect hops, opens WebSockets and preconnects on its own, outside
``page.route``. With this proxy as the only way out, each of those connections is checked by the
same :class:`~streams.ssrf.EgressGuard` as the http tier, and the checked address is the one
connected to (no second lookup; DNS rebinding has nothing to exploit).

What it speaks (HTTP/1.1, RFC 9110/9112):

- ``CONNECT host:port`` (https, wss; Chromium tunnels ws:// this way too): guard, connect, answer
  ``200``, then relay bytes both ways until either side closes;
- absolute-form plain HTTP (``GET http://host:port/path HTTP/1.1``, ``Upgrade: websocket``
  included): exactly one request per client connection, so one connection never reaches two
  upstreams. The request goes out with ``Connection: close`` (body framed by Content-Length or
  re-chunked), the response comes back with ``Connection: close`` / ``Proxy-Connection: close``,
  then both connections close. A ``101`` answer turns the pair into a relay.

Identity: each browser context gets a :class:`Lease`, a listening port of its own on 127.0.0.1
that exists while the context does; the context's proxy is that port. The proxy's shared port
(``server``, given to Chromium at launch for traffic outside our contexts) serves no one: ``407``
and close. Ports rather than proxy credentials, because Playwright answers a proxy's ``407``
by intercepting every request of the context (the Fetch domain): measured with Chromium 156,
credentials cost ~27 ms of CPU per page and a tenth of the pages/s. What the port does not do
is keep other processes on this host out for the life of a job: whatever can connect to
127.0.0.1 could send requests through a lease, and gets only what the guard allows.

A lease says where its traffic goes (directly, or through an upstream egress proxy) and records
what went wrong per ``host:port`` (refused by the guard, DNS, connect failures, upstream proxy
failures), so the fetcher can name the real cause of a failed navigation. Answers the proxy
makes itself carry ``X-Scrapifie-Guard: <lease marker>``.

Through an upstream proxy, targets are checked here, then sent to it by name (CONNECT for
tunnels, absolute-form for plain HTTP, the way the http tier's client does it): the upstream
resolves them again, which we cannot pin (README: egress pools). Upstream credentials come
from the proxy URL's userinfo and never appear in logs or messages: upstreams are named by
``scheme://host:port``.

Invariants: request heads are bounded (``max_head_bytes``, 64 KiB; response heads 256 KiB like
Chromium's own limit), connects and heads have deadlines, no input ends the server, and
``aclose`` (or a lease's end) closes every connection it owns.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import ipaddress
import logging
import re
import secrets
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, TypedDict
from urllib.parse import unquote, urlsplit

from schemas import ErrorCode
from streams.errors import FatalError, FetchError, TransientError
from streams.ssrf import EgressGuard, SSRFBlocked

log = logging.getLogger(__name__)

__all__ = [
    "GUARD_HEADER",
    "GuardProxy",
    "GuardProxyStats",
    "Lease",
    "ProxySettings",
    "Upstream",
]

#: Header on every answer the guard proxy makes itself (value: the lease's marker).
GUARD_HEADER = "X-Scrapifie-Guard"

MAX_HEAD_BYTES = 64 * 1024
MAX_RESPONSE_HEAD_BYTES = 256 * 1024  # Chromium's own limit on response headers
_CHUNK = 64 * 1024
_MAX_TRAILER_LINES = 64
_CLOSE_TIMEOUT_S = 2.0

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/1\.[01]")
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([1-5][0-9][0-9])(?: ([^\r\n]*))?")
_REG_NAME = re.compile(r"[A-Za-z0-9._-]+")
_FIELD_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# Hop-by-hop headers (RFC 9110 §7.6.1) and proxy credentials: never forwarded as received.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class ProxySettings(TypedDict, total=False):
    """Playwright's proxy settings (``new_context(proxy=...)``)."""

    server: str
    bypass: str


@dataclass(frozen=True, slots=True, repr=False)
class Upstream:
    """An upstream forward proxy (``http://[user:pass@]host:port``). ``authorization`` is the
    ``Proxy-Authorization`` value built from the userinfo; only ``label`` is ever shown."""

    host: str
    port: int
    authorization: str | None
    label: str

    @classmethod
    def parse(cls, url: str) -> Upstream:
        """Raises ValueError (whose message never holds the credentials)."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "http":
            raise ValueError(
                f"browser tiers reach upstream proxies over http:// only, not {parts.scheme!r}"
            )
        try:
            host, port = parts.hostname, parts.port or 80
        except ValueError:
            raise ValueError("the upstream proxy URL has an invalid port") from None
        if not host:
            raise ValueError("the upstream proxy URL has no host")
        shown = f"[{host}]" if ":" in host else host
        auth = None
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            auth = "Basic " + base64.b64encode(userinfo.encode()).decode("ascii")
        return cls(host, port, auth, f"http://{shown}:{port}")

    def __repr__(self) -> str:
        return f"Upstream({self.label})"


@dataclass(eq=False, slots=True, repr=False)
class Lease:
    """One browser context's identity at the guard proxy, and what happened to its traffic.

    ``failures`` maps ``(host, port)`` (host lower-case, no brackets) to the last error met
    reaching it: :class:`~streams.ssrf.SSRFBlocked` when the guard refused it, a
    :class:`TransientError` with ``PROXY_ERROR`` when the upstream proxy failed, else the DNS
    or connect error.
    """

    upstream: Upstream | None
    marker: str
    port: int = 0  # the lease's own listening port on 127.0.0.1
    failures: dict[tuple[str, int], FetchError] = field(default_factory=dict)
    refusals: int = 0
    upstream_failures: int = 0
    connections: int = 0  # connections served on the lease's port
    active: bool = True
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def forget_failures(self) -> None:
        """Start a new job on this lease: failures met so far were the earlier jobs'."""
        self.failures.clear()

    def failure(self, host: str, port: int) -> FetchError | None:
        return self.failures.get((_norm_host(host), port))

    def record(self, host: str, port: int, error: FetchError) -> None:
        self.failures[(_norm_host(host), port)] = error
        if isinstance(error, SSRFBlocked):
            self.refusals += 1
        elif error.code is ErrorCode.PROXY_ERROR:
            self.upstream_failures += 1

    @property
    def server(self) -> str:
        """The lease's proxy URL (``http://127.0.0.1:PORT``)."""
        return f"http://127.0.0.1:{self.port}"

    def proxy_settings(self) -> ProxySettings:
        """Playwright proxy settings for this lease. ``<-loopback>`` is written out although
        Playwright adds it for Chromium unless PLAYWRIGHT_DISABLE_FORCED_CHROMIUM_PROXIED_LOOPBACK
        is set: it removes Chromium's implicit bypass of loopback and link-local targets, so
        even with that variable set nothing goes around the proxy."""
        return {"server": self.server, "bypass": "<-loopback>"}

    def __repr__(self) -> str:
        via = self.upstream.label if self.upstream else "direct"
        return f"Lease({via}, refusals={self.refusals}, upstream_failures={self.upstream_failures})"


@dataclass(slots=True)
class GuardProxyStats:
    """Counters since the proxy started (for metrics and tests)."""

    connections: int = 0
    unleased: int = 0  # connections to the shared port (they get 407)
    bad_requests: int = 0
    refused: int = 0
    upstream_failures: int = 0
    tunnels: int = 0
    forwarded: int = 0


class _Reject(Exception):
    """A request the proxy answers itself, with this status, then closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    version: bytes
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]


_REASONS = {
    200: "Connection established",
    400: "Bad Request",
    403: "Forbidden",
    407: "Proxy Authentication Required",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}


class GuardProxy:
    """The guard forward proxy; ``async with GuardProxy(guard) as proxy`` then
    ``async with proxy.lease(upstream_url) as lease`` per browser context."""

    def __init__(
        self,
        guard: EgressGuard,
        *,
        connect_timeout_s: float = 10.0,
        head_timeout_s: float = 30.0,
        max_head_bytes: int = MAX_HEAD_BYTES,
    ) -> None:
        self._guard = guard
        self._connect_timeout_s = connect_timeout_s
        self._head_timeout_s = head_timeout_s
        self._max_head = max_head_bytes
        self._server: asyncio.Server | None = None
        self._port = 0
        self._leases: set[Lease] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.stats = GuardProxyStats()

    @property
    def server(self) -> str:
        """The shared port's URL (``http://127.0.0.1:PORT``): it serves no one; browsers are
        launched with it so that traffic outside our contexts meets a refusal."""
        if self._server is None:
            raise RuntimeError("the guard proxy is not running")
        return f"http://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    # lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._server is not None or self._closed:
            raise RuntimeError("a GuardProxy is started once")
        self._server = await asyncio.start_server(
            self._on_client, "127.0.0.1", 0, limit=self._max_head
        )
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and close every connection (leases end with it)."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        await _cancel_all(self._tasks)
        if self._server is not None:
            await self._server.wait_closed()
        for lease in self._leases:
            lease.active = False
        self._leases.clear()

    # leases --------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, upstream: str | None = None) -> AsyncIterator[Lease]:
        """A fresh identity for one browser context (a listening port of its own), through
        ``upstream`` (a proxy URL, may hold ``user:pass@``) or directly. On exit its port
        closes and its connections are closed. A bad upstream URL raises
        FatalError(PROXY_ERROR); a closed proxy, TransientError (the worker is shutting down:
        the job is retried elsewhere)."""
        if self._server is None:
            raise RuntimeError("start the guard proxy first (async with)")
        if self._closed:
            raise TransientError(ErrorCode.INTERNAL, "the guard proxy is closed")
        try:
            up = Upstream.parse(upstream) if upstream is not None else None
        except ValueError as exc:
            raise FatalError(ErrorCode.PROXY_ERROR, str(exc)) from None
        lease = Lease(upstream=up, marker=secrets.token_hex(8))
        server = await asyncio.start_server(
            functools.partial(self._on_client, lease=lease),
            "127.0.0.1",
            0,
            limit=self._max_head,
        )
        lease.port = server.sockets[0].getsockname()[1]
        self._leases.add(lease)
        try:
            yield lease
        finally:
            lease.active = False
            self._leases.discard(lease)
            server.close()
            await _cancel_all(lease._tasks)
            await server.wait_closed()

    # connections ---------------------------------------------------------------------------

    async def _on_client(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        lease: Lease | None = None,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closed or (lease is not None and not lease.active):
            writer.close()
            return
        self._tasks.add(task)
        if lease is not None:
            lease._tasks.add(task)  # cancelled when the lease ends, even while reading the head
        self.stats.connections += 1
        try:
            await self._serve(reader, writer, lease)
        except asyncio.CancelledError:
            # Closed by aclose() or by the end of its lease. Returning normally matters: on
            # Python 3.11 asyncio's done-callback for this task calls task.exception(), which
            # raises (and gets logged) when the task ends cancelled.
            pass
        except ConnectionError:
            pass  # either side went away
        except Exception:
            # Never let one connection take the proxy down; it is closed below.
            log.exception("guard proxy: a connection failed")
        finally:
            self._tasks.discard(task)
            if lease is not None:
                lease._tasks.discard(task)
            await _close(writer)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lease: Lease | None
    ) -> None:
        try:
            head = await self._read_head(reader)
            if head is None:
                return
            req = _parse_request(head)
        except _Reject as rej:
            self.stats.bad_requests += 1
            log.debug("guard proxy: bad request: %s", rej.reason)
            await _respond(writer, rej.status, rej.reason)
            return
        if lease is None:
            self.stats.unleased += 1
            await _respond(
                writer,
                407,
                "this port serves no one: each browser context has a port of its own",
                [("Proxy-Authenticate", 'Basic realm="scrapifie-guard"')],
            )
            return
        lease.connections += 1
        try:
            if req.method == "CONNECT":
                await self._tunnel(req, lease, reader, writer)
            else:
                await self._forward(req, lease, reader, writer)
        except _Reject as rej:
            self.stats.bad_requests += 1
            await _respond(writer, rej.status, rej.reason, marker=lease.marker)

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request head (through the blank line), or None if the client left first."""
        try:
            async with asyncio.timeout(self._head_timeout_s):
                return await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise _Reject(431, f"request head over {self._max_head} bytes") from None
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _Reject(400, "incomplete request head") from None
            return None
        except TimeoutError:
            return None  # an idle (preconnected) connection: just close it
        except ConnectionError:
            return None

    # CONNECT -------------------------------------------------------------------------------

    async def _tunnel(
        self,
        req: _Request,
        lease: Lease,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        host, port = _authority(req.target, default_port=None)
        try:
            up_reader, up_writer = await self._open(lease, host, port, tunnel=True)
        except FetchError as exc:
            await self._refuse(writer, lease, host, port, exc)
            return
        try:
            self.stats.tunnels += 1
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await _relay(reader, writer, up_reader, up_writer)
        finally:
            await _close(up_writer)

    # absolute-form HTTP --------------------------------------------------------------------

    async def _forward(
        self,
        req: _Request,
        lease: Lease,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        host, port, authority, path = _absolute_target(req.target)
        chunked, length = _request_framing(req)
        upgrade = _is_websocket_upgrade(req)
        try:
            up_reader, up_writer = await self._open(lease, host, port, tunnel=False)
        except FetchError as exc:
            await self._refuse(writer, lease, host, port, exc)
            return
        try:
            self.stats.forwarded += 1
            target = path if lease.upstream is None else f"http://{authority}{path}"
            up_writer.write(_request_head(req, target, authority, lease.upstream, chunked, upgrade))
            if chunked:
                await _copy_chunked(reader, up_writer)
            elif length:
                await _copy_exactly(reader, up_writer, length)
            await up_writer.drain()
            await self._relay_response(lease, host, port, reader, writer, up_reader, up_writer)
        finally:
            await _close(up_writer)

    async def _relay_response(
        self,
        lease: Lease,
        host: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        # Watch the client while waiting: if it goes away (its context closed), stop.
        response = asyncio.ensure_future(self._response_head(lease, host, port, up_reader))
        gone = asyncio.ensure_future(_client_gone(reader))
        try:
            await asyncio.wait({response, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not response.done():
                return
            try:
                status, head = response.result()
            except FetchError as exc:
                await self._refuse(writer, lease, host, port, exc)
                return
            writer.write(head)
            await writer.drain()
            if status == 101:
                gone.cancel()
                await asyncio.gather(gone, return_exceptions=True)
                await _relay(reader, writer, up_reader, up_writer)
                return
            copy = asyncio.ensure_future(_copy_until_eof(up_reader, writer))
            try:
                await asyncio.wait({copy, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                copy.cancel()
                await asyncio.gather(copy, return_exceptions=True)
        finally:
            for t in (response, gone):
                t.cancel()
            await asyncio.gather(response, gone, return_exceptions=True)

    async def _response_head(
        self, lease: Lease, host: str, port: int, up_reader: asyncio.StreamReader
    ) -> tuple[int, bytes]:
        """The final response head (interim 1xx heads are passed on inside it), rewritten for
        the client: hop-by-hop headers dropped, ``Connection: close`` set."""
        out = b""
        while True:
            try:
                raw = await up_reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise FatalError(
                    ErrorCode.INVALID_RESPONSE, f"{host}:{port} sent response headers over 256 KiB"
                ) from None
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                raise TransientError(
                    ErrorCode.CONNECTION_ERROR, f"{host}:{port} closed without a response"
                ) from exc
            status, head = _rewrite_response_head(raw, host, port)
            if status == 407 and lease.upstream is not None:
                raise TransientError(
                    ErrorCode.PROXY_ERROR,
                    f"proxy {lease.upstream.label} refused our credentials (HTTP 407)",
                )
            out += head
            if status >= 200 or status == 101:
                return status, out

    # connecting ----------------------------------------------------------------------------

    async def _open(
        self, lease: Lease, host: str, port: int, *, tunnel: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Check ``host:port`` and connect: to a checked address, or to the lease's upstream
        (through a CONNECT tunnel when ``tunnel``). Raises FetchError."""
        addresses = await self._guard.resolve(host, port)
        up = lease.upstream
        if up is None:
            return await self._connect_checked(host, port, addresses)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                up_reader, up_writer = await asyncio.open_connection(
                    up.host, up.port, limit=MAX_RESPONSE_HEAD_BYTES
                )
        except (OSError, TimeoutError) as exc:
            raise TransientError(
                ErrorCode.PROXY_ERROR, f"cannot connect to proxy {up.label}: {_why(exc)}"
            ) from None
        if not tunnel:
            return up_reader, up_writer
        try:
            await self._upstream_connect(up, host, port, up_reader, up_writer)
        except BaseException:
            await _close(up_writer)
            raise
        return up_reader, up_writer

    async def _upstream_connect(
        self,
        up: Upstream,
        host: str,
        port: int,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        authority = _format_authority(host, port)
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if up.authorization is not None:
            head += f"Proxy-Authorization: {up.authorization}\r\n"
        up_writer.write((head + "\r\n").encode("latin-1"))
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await up_writer.drain()
                answer = await up_reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise TransientError(
                ErrorCode.PROXY_ERROR, f"proxy {up.label} did not answer CONNECT in time"
            ) from None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            raise TransientError(
                ErrorCode.PROXY_ERROR, f"proxy {up.label} failed during CONNECT"
            ) from None
        match = _STATUS_LINE.match(answer.split(b"\r\n", 1)[0])
        status = int(match.group(2)) if match else 0
        if not 200 <= status < 300:
            raise TransientError(
                ErrorCode.PROXY_ERROR, f"proxy {up.label} refused CONNECT: HTTP {status}"
            )

    async def _connect_checked(
        self, host: str, port: int, addresses: Iterable[tuple[int, str]]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        last: BaseException | None = None
        for family, address in addresses:
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    return await asyncio.open_connection(
                        address,
                        port,
                        family=family,
                        flags=socket.AI_NUMERICHOST,
                        limit=MAX_RESPONSE_HEAD_BYTES,
                    )
            except (OSError, TimeoutError) as exc:
                last = exc
        if isinstance(last, TimeoutError):
            raise TransientError(ErrorCode.TIMEOUT, f"connecting to {host}:{port} timed out")
        raise TransientError(
            ErrorCode.CONNECTION_ERROR, f"cannot connect to {host}:{port}: {_why(last)}"
        )

    async def _refuse(
        self, writer: asyncio.StreamWriter, lease: Lease, host: str, port: int, exc: FetchError
    ) -> None:
        lease.record(host, port, exc)
        if isinstance(exc, SSRFBlocked):
            self.stats.refused += 1
            log.info("guard proxy refused %s:%s: %s", host, port, exc.message)
            status = 403
        elif exc.code is ErrorCode.PROXY_ERROR:
            self.stats.upstream_failures += 1
            log.info("guard proxy: %s", exc.message)  # the egress pool warns when it benches
            status = 502
        else:
            status = 504 if exc.code is ErrorCode.TIMEOUT else 502
        await _respond(writer, status, exc.message, marker=lease.marker)


# parsing --------------------------------------------------------------------------------------


def _parse_request(head: bytes) -> _Request:
    lines = head[:-4].split(b"\r\n")
    if any(b"\n" in line or b"\r" in line for line in lines):
        raise _Reject(400, "bare CR or LF in the request head")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _VERSION.fullmatch(parts[2]):
        raise _Reject(400, "malformed request line")
    target = parts[1]
    if not target or any(c < 0x21 or c > 0x7E for c in target):
        raise _Reject(400, "malformed request target")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise _Reject(400, "malformed header line")
        value = value.strip(b" \t")
        if _FIELD_VALUE_BAD.search(value):
            raise _Reject(400, "control character in a header value")
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    return _Request(parts[0].decode("ascii"), target.decode("ascii"), parts[2], headers)


def _norm_host(host: str) -> str:
    return host.strip("[]").lower()


def _format_authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _authority(text: str, default_port: int | None) -> tuple[str, int]:
    """(host, port) of ``host[:port]`` / ``[v6][:port]``; raises _Reject(400)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _Reject(400, "malformed IPv6 authority")
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Reject(400, "malformed IPv6 address") from None
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
        if not _REG_NAME.fullmatch(host):
            raise _Reject(400, "malformed host")
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6:
            raise _Reject(400, "malformed port")
        port = int(rest[1:])
    elif default_port is not None:
        port = default_port
    else:
        raise _Reject(400, "CONNECT needs host:port")
    if not 0 < port < 65536:
        raise _Reject(400, "port out of range")
    return host.lower(), port


def _absolute_target(target: str) -> tuple[str, int, str, str]:
    """(host, port, authority, origin-form path) of an absolute-form ``http://`` target."""
    if target[:7].lower() != "http://":
        raise _Reject(400, "the proxy takes CONNECT or absolute-form http:// requests only")
    rest = target[7:]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if "@" in authority:
        raise _Reject(400, "userinfo in the request target")
    if not path.startswith("/"):
        path = "/" + path
    host, port = _authority(authority, default_port=80)
    return host, port, authority, path


def _request_framing(req: _Request) -> tuple[bool, int]:
    """(chunked, content length) of the request body; refuses ambiguous framing."""
    te = [t.strip().lower() for v in req.values("transfer-encoding") for t in v.split(",")]
    lengths = {v.strip() for v in req.values("content-length")}
    if te:
        if te != ["chunked"] or req.version == b"HTTP/1.0":
            raise _Reject(400, "unsupported Transfer-Encoding")
        if lengths:
            raise _Reject(400, "both Content-Length and Transfer-Encoding")
        return True, 0
    if not lengths:
        return False, 0
    if len(lengths) > 1 or not all(c.isdigit() for c in next(iter(lengths))):
        raise _Reject(400, "invalid Content-Length")
    value = next(iter(lengths))
    if not value or len(value) > 18:
        raise _Reject(400, "invalid Content-Length")
    return False, int(value)


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    return {
        t.strip().lower() for k, v in headers if k.lower() == "connection" for t in v.split(",")
    }


def _is_websocket_upgrade(req: _Request) -> bool:
    return (
        req.method == "GET"
        and "upgrade" in _connection_tokens(req.headers)
        and [v.strip().lower() for v in req.values("upgrade")] == ["websocket"]
    )


def _request_head(
    req: _Request,
    target: str,
    authority: str,
    upstream: Upstream | None,
    chunked: bool,
    upgrade: bool,
) -> bytes:
    named = _connection_tokens(req.headers) - {"content-length"}
    lines = [f"{req.method} {target} HTTP/1.1", f"Host: {authority}"]
    for name, value in req.headers:
        low = name.lower()
        if low in _HOP_BY_HOP or low in named or low == "host":
            continue
        lines.append(f"{name}: {value}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if upgrade:
        lines += ["Connection: Upgrade", "Upgrade: websocket"]
    else:
        lines.append("Connection: close")
    if upstream is not None and upstream.authorization is not None:
        lines.append(f"Proxy-Authorization: {upstream.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _rewrite_response_head(raw: bytes, host: str, port: int) -> tuple[int, bytes]:
    lines = raw[:-4].split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None or any(b"\n" in line or b"\r" in line for line in lines):
        raise FatalError(ErrorCode.INVALID_RESPONSE, f"{host}:{port} sent a malformed response")
    status = int(match.group(2))
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise FatalError(
                ErrorCode.INVALID_RESPONSE, f"{host}:{port} sent a malformed header line"
            )
        headers.append((name, value.strip(b" \t")))
    named = {
        t.strip().lower() for k, v in headers if k.lower() == b"connection" for t in v.split(b",")
    }
    keep_framing = {b"content-length", b"transfer-encoding"}
    drop = {b"connection", b"proxy-connection", b"keep-alive", b"proxy-authenticate"}
    out = [lines[0]]
    for name, value in headers:
        low = name.lower()
        if low in drop or (low in named and low not in keep_framing):
            continue
        if low == b"upgrade" and status != 101:
            continue
        out.append(name + b": " + value)
    if status == 101:
        out.append(b"Connection: Upgrade")
    elif status >= 200:
        out += [b"Connection: close", b"Proxy-Connection: close"]
    return status, b"\r\n".join(out) + b"\r\n\r\n"


# I/O helpers ----------------------------------------------------------------------------------


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    message: str,
    extra: Iterable[tuple[str, str]] = (),
    *,
    marker: str | None = None,
) -> None:
    body = (message + "\n").encode("utf-8", "replace")
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Proxy-Connection: close",
        *(f"{k}: {v}" for k, v in extra),
    ]
    if marker is not None:
        lines.append(f"{GUARD_HEADER}: {marker}")
    with contextlib.suppress(ConnectionError):
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()


async def _copy_exactly(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int
) -> None:
    left = length
    while left:
        data = await reader.read(min(left, _CHUNK))
        if not data:
            raise _Reject(400, "request body shorter than its Content-Length")
        left -= len(data)
        writer.write(data)
        await writer.drain()


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Re-frame a chunked request body (size lines validated, extensions and trailers
    dropped)."""
    try:
        while True:
            line = (await reader.readuntil(b"\r\n"))[:-2]
            size_text = line.split(b";", 1)[0].strip()
            if (
                not size_text
                or len(size_text) > 15
                or not all(c in b"0123456789abcdefABCDEF" for c in size_text)
            ):
                raise _Reject(400, "malformed chunk size")
            size = int(size_text, 16)
            if size == 0:
                for _ in range(_MAX_TRAILER_LINES):
                    if await reader.readuntil(b"\r\n") == b"\r\n":
                        writer.write(b"0\r\n\r\n")
                        return
                raise _Reject(400, "too many trailer lines")
            writer.write(b"%x\r\n" % size)
            await _copy_exactly(reader, writer, size)
            if await reader.readexactly(2) != b"\r\n":
                raise _Reject(400, "chunk data not followed by CRLF")
            writer.write(b"\r\n")
    except asyncio.LimitOverrunError:
        raise _Reject(400, "chunk line too long") from None
    except asyncio.IncompleteReadError:
        raise _Reject(400, "request body ended inside a chunk") from None


async def _copy_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()


async def _client_gone(reader: asyncio.StreamReader) -> None:
    """Returns when the client closes; anything it sends meanwhile is not forwarded (one
    request per connection)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(_CHUNK):
            pass


async def _relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Bytes both ways until either side closes (then both are closed by the callers)."""
    tasks = {
        asyncio.ensure_future(_copy_until_eof(reader, up_writer)),
        asyncio.ensure_future(_copy_until_eof(up_reader, writer)),
    }
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel_all(tasks)


async def _cancel_all(tasks: set[asyncio.Task[None]]) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close a connection; one whose peer stops reading is aborted rather than waited for."""
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise


def _why(exc: BaseException | None) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__ if exc is not None else "no address"
