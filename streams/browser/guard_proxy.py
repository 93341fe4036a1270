"""The guard proxy: a forward proxy on 127.0.0.1 that every Chromium connection goes through.

Chromium follows redirect hops, opens WebSockets and preconnects on its own, outside
``page.route``. With this proxy as the only way out, each of those connections is checked by the
same :class:`~streams.fetchers.ssrf.EgressGuard` as the http tier, and the checked address is
the one connected to (no second lookup; DNS rebinding has nothing to exploit).

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
import contextlib
import functools
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from schemas import ErrorCode
from streams.browser import http1
from streams.browser.config import ProxySettings
from streams.browser.http1 import GUARD_HEADER, MAX_HEAD_BYTES, MAX_RESPONSE_HEAD_BYTES
from streams.browser.lease import Lease, Upstream
from streams.errors import FatalError, FetchError, TransientError
from streams.fetchers.ssrf import EgressGuard, SSRFBlocked

log = logging.getLogger(__name__)

__all__ = [
    "GUARD_HEADER",
    "GuardProxy",
    "GuardProxyStats",
    "Lease",
    "ProxySettings",
    "Upstream",
]


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
        await http1.cancel_all(self._tasks)
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
            await http1.cancel_all(lease._tasks)
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
            await http1.close(writer)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lease: Lease | None
    ) -> None:
        try:
            head = await self._read_head(reader)
            if head is None:
                return
            req = http1.parse_request(head)
        except http1.Reject as rej:
            self.stats.bad_requests += 1
            log.debug("guard proxy: bad request: %s", rej.reason)
            await http1.respond(writer, rej.status, rej.reason)
            return
        if lease is None:
            self.stats.unleased += 1
            await http1.respond(
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
        except http1.Reject as rej:
            self.stats.bad_requests += 1
            await http1.respond(writer, rej.status, rej.reason, marker=lease.marker)

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request head (through the blank line), or None if the client left first."""
        try:
            async with asyncio.timeout(self._head_timeout_s):
                return await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise http1.Reject(431, f"request head over {self._max_head} bytes") from None
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise http1.Reject(400, "incomplete request head") from None
            return None
        except TimeoutError:
            return None  # an idle (preconnected) connection: just close it
        except ConnectionError:
            return None

    # CONNECT -------------------------------------------------------------------------------

    async def _tunnel(
        self,
        req: http1.Request,
        lease: Lease,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        host, port = http1.parse_authority(req.target, default_port=None)
        try:
            up_reader, up_writer = await self._open(lease, host, port, tunnel=True)
        except FetchError as exc:
            await self._refuse(writer, lease, host, port, exc)
            return
        try:
            self.stats.tunnels += 1
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await http1.relay(reader, writer, up_reader, up_writer)
        finally:
            await http1.close(up_writer)

    # absolute-form HTTP --------------------------------------------------------------------

    async def _forward(
        self,
        req: http1.Request,
        lease: Lease,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        host, port, authority, path = http1.absolute_target(req.target)
        chunked, length = http1.request_framing(req)
        upgrade = http1.is_websocket_upgrade(req)
        try:
            up_reader, up_writer = await self._open(lease, host, port, tunnel=False)
        except FetchError as exc:
            await self._refuse(writer, lease, host, port, exc)
            return
        try:
            self.stats.forwarded += 1
            target = path if lease.upstream is None else f"http://{authority}{path}"
            up_writer.write(
                http1.request_head(req, target, authority, lease.upstream, chunked, upgrade)
            )
            if chunked:
                await http1.copy_chunked(reader, up_writer)
            elif length:
                await http1.copy_exactly(reader, up_writer, length)
            await up_writer.drain()
            await self._relay_response(lease, host, port, reader, writer, up_reader, up_writer)
        finally:
            await http1.close(up_writer)

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
        gone = asyncio.ensure_future(http1.client_gone(reader))
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
                await http1.relay(reader, writer, up_reader, up_writer)
                return
            copy = asyncio.ensure_future(http1.copy_until_eof(up_reader, writer))
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
            status, head = http1.rewrite_response_head(raw, host, port)
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
                ErrorCode.PROXY_ERROR, f"cannot connect to proxy {up.label}: {http1.why(exc)}"
            ) from None
        if not tunnel:
            return up_reader, up_writer
        try:
            await self._upstream_connect(up, host, port, up_reader, up_writer)
        except BaseException:
            await http1.close(up_writer)
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
        authority = http1.format_authority(host, port)
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
        match = http1.STATUS_LINE.match(answer.split(b"\r\n", 1)[0])
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
            ErrorCode.CONNECTION_ERROR, f"cannot connect to {host}:{port}: {http1.why(last)}"
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
        await http1.respond(writer, status, exc.message, marker=lease.marker)
