"""The guard proxy with a plain asyncio client: a port per lease, the SSRF guard on every
connection, one request per plain-HTTP connection, framing, hostile input. All on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from schemas import ErrorCode
from streams.browser.guard_proxy import GUARD_HEADER, GuardProxy, Lease, Upstream
from streams.errors import FatalError, TransientError
from streams.fetchers.ssrf import EgressGuard, SSRFBlocked

pytestmark = pytest.mark.unit

SECRET = "upstream-s3cret"


@dataclass
class Seen:
    head: bytes
    body: bytes

    @property
    def lines(self) -> list[str]:
        return self.head.decode("latin-1").split("\r\n")

    def header(self, name: str) -> list[str]:
        low = name.lower() + ":"
        return [ln.split(":", 1)[1].strip() for ln in self.lines[1:] if ln.lower().startswith(low)]


@dataclass
class Server:
    """A small HTTP/1.1 origin (or, with ``proxy_auth``, a forward proxy that demands Basic
    credentials and tunnels CONNECT) on 127.0.0.1, recording what it receives."""

    proxy_auth: str | None = None
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            seen = Seen(head, b"")
            if any("chunked" in v.lower() for v in seen.header("Transfer-Encoding")):
                seen.body = await _read_chunked(reader)
            elif seen.header("Content-Length"):
                seen.body = await reader.readexactly(int(seen.header("Content-Length")[0]))
            self.requests.append(seen)
            method, target, _ = seen.lines[0].split(" ")
            if self.proxy_auth is not None:
                if seen.header("Proxy-Authorization") != [self.proxy_auth]:
                    writer.write(b"HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    return
                if method == "CONNECT":
                    host, port = target.rsplit(":", 1)
                    r, w = await asyncio.open_connection(host, int(port))
                    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
                    await _pipe(reader, writer, r, w)
                    return
                # absolute-form: answer ourselves, with our Via
                body = f"via proxy {target}".encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nVia: 1.1 upstream\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
                await writer.drain()
                return
            if seen.header("Upgrade") == ["websocket"]:
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
                while data := await reader.read(1024):
                    writer.write(b"echo:" + data)
                    await writer.drain()
                return
            if target == "/huge-headers":
                writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n")
                await writer.drain()
                return
            body = b"hello " + target.encode() + b" " + seen.body
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: keep-alive\r\n"
                b"Keep-Alive: timeout=5\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            if seen.header("Connection") == ["close"]:
                return


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _pipe(
    a: asyncio.StreamReader,
    aw: asyncio.StreamWriter,
    b: asyncio.StreamReader,
    bw: asyncio.StreamWriter,
) -> None:
    async def copy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await r.read(4096):
                w.write(data)
                await w.drain()

    tasks = [asyncio.ensure_future(copy(a, bw)), asyncio.ensure_future(copy(b, aw))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        bw.close()


@pytest_asyncio.fixture
async def target() -> AsyncIterator[Server]:
    s = await Server().start()
    yield s
    await s.close()


@pytest_asyncio.fixture
async def private() -> AsyncIterator[Server]:
    """A server the guard must never let anyone reach (loopback, not allowlisted)."""
    s = await Server().start()
    yield s
    await s.close()


class _Guard(EgressGuard):
    """The real guard, plus one name that does not resolve (no DNS in unit tests)."""

    async def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        if host == "nowhere.test":
            raise FatalError(ErrorCode.DNS_ERROR, "host not found: nowhere.test")
        return await super().resolve(host, port)


@pytest_asyncio.fixture
async def proxy(target: Server) -> AsyncIterator[GuardProxy]:
    async with GuardProxy(_Guard([f"127.0.0.1:{target.port}"]), connect_timeout_s=5) as p:
        yield p


@contextlib.asynccontextmanager
async def client(
    proxy: GuardProxy | Lease,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection to the proxy's shared port, or to a lease's own port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def send(proxy: GuardProxy | Lease, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` on a fresh connection; the whole answer up to EOF, split."""
    async with client(proxy) as (reader, writer):
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(-1), 30)
    return split(raw)


def split(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split(" ")[1]), headers, body


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    status, headers, _ = split(raw)
    return status, headers


# CONNECT ----------------------------------------------------------------------------------------


async def test_connect_to_an_allowed_target_is_tunnelled(proxy: GuardProxy, target: Server) -> None:
    async with proxy.lease() as lease, client(lease) as (reader, writer):
        writer.write(f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, _ = await read_head(reader)
        assert status == 200
        writer.write(b"GET /inside HTTP/1.1\r\nHost: t\r\n\r\n")
        _, headers = await read_head(reader)
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 30)
        assert body == b"hello /inside "
        assert lease.failures == {}
    assert target.connections == 1
    assert proxy.stats.tunnels == 1


async def test_connect_to_a_private_target_is_refused_and_recorded(
    proxy: GuardProxy, private: Server
) -> None:
    async with proxy.lease() as lease:
        status, headers, body = await send(
            lease, f"CONNECT 127.0.0.1:{private.port} HTTP/1.1\r\n\r\n".encode()
        )
    assert status == 403
    assert headers[GUARD_HEADER.lower()] == lease.marker
    assert b"loopback" in body
    err = lease.failure("127.0.0.1", private.port)
    assert isinstance(err, SSRFBlocked) and err.code is ErrorCode.SSRF_BLOCKED
    assert lease.refusals == 1
    assert private.connections == 0


async def test_names_are_resolved_and_checked_by_the_guard(
    proxy: GuardProxy, private: Server
) -> None:
    async with proxy.lease() as lease:
        status, _, _ = await send(
            lease, f"CONNECT localhost:{private.port} HTTP/1.1\r\n\r\n".encode()
        )
        assert status == 403
        status, _, _ = await send(lease, b"GET http://nowhere.test/ HTTP/1.1\r\n\r\n")
        assert status == 502
    err = lease.failure("nowhere.test", 80)
    assert isinstance(err, FatalError) and err.code is ErrorCode.DNS_ERROR
    assert isinstance(lease.failure("LOCALHOST", private.port), SSRFBlocked)
    assert private.connections == 0


async def test_a_target_that_refuses_connections_is_a_connection_error(proxy: GuardProxy) -> None:
    dead = await Server().start()
    port = dead.port
    await dead.close()
    guarded = GuardProxy(EgressGuard([f"127.0.0.1:{port}"]))
    async with guarded, guarded.lease() as lease:
        status, headers, _ = await send(
            lease, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode()
        )
    assert status == 502 and headers[GUARD_HEADER.lower()] == lease.marker
    err = lease.failure("127.0.0.1", port)
    assert isinstance(err, TransientError) and err.code is ErrorCode.CONNECTION_ERROR


# identity: a port per lease ---------------------------------------------------------------------


async def test_the_shared_port_serves_no_one(proxy: GuardProxy, target: Server) -> None:
    async with proxy.lease() as lease:
        assert lease.port not in (0, proxy.port)
        for head in (
            f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\n\r\n",
            f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\nProxy-Authorization: Basic eDp5\r\n\r\n",
            f"GET http://127.0.0.1:{target.port}/ HTTP/1.1\r\n\r\n",
        ):
            status, headers, _ = await send(proxy, head.encode())
            assert status == 407, head
            assert headers["proxy-authenticate"].startswith("Basic ")
    assert target.connections == 0
    assert proxy.stats.unleased == 3


async def test_an_ended_lease_opens_nothing(proxy: GuardProxy, target: Server) -> None:
    async with proxy.lease() as lease:
        port = lease.port
        status, _, _ = await send(
            lease, f"GET http://127.0.0.1:{target.port}/a HTTP/1.1\r\n\r\n".encode()
        )
        assert status == 200
    # Once the lease (the browser context) has ended, its port is closed.
    assert not lease.active
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    assert target.connections == 1


async def test_each_lease_records_only_its_own_traffic(
    proxy: GuardProxy, target: Server, private: Server
) -> None:
    async with proxy.lease() as one, proxy.lease() as two:
        assert one.port != two.port
        status, _, _ = await send(
            one, f"CONNECT 127.0.0.1:{private.port} HTTP/1.1\r\n\r\n".encode()
        )
        assert status == 403
        status, _, _ = await send(
            two, f"GET http://127.0.0.1:{target.port}/b HTTP/1.1\r\n\r\n".encode()
        )
        assert status == 200
    assert isinstance(one.failure("127.0.0.1", private.port), SSRFBlocked)
    assert two.failure("127.0.0.1", private.port) is None
    assert (one.connections, two.connections) == (1, 1)
    assert private.connections == 0


# plain HTTP --------------------------------------------------------------------------------------


async def test_plain_http_forwards_exactly_one_request_then_closes(
    proxy: GuardProxy, target: Server, private: Server
) -> None:
    async with proxy.lease() as lease:
        first = (
            f"GET http://127.0.0.1:{target.port}/one?q=1 HTTP/1.1\r\nHost: evil.example\r\n"
            f"Proxy-Connection: keep-alive\r\nConnection: keep-alive, X-Drop\r\n"
            f"X-Drop: 1\r\nX-Keep: 2\r\n\r\n"
        )
        # A second, pipelined request to another upstream must not be sent anywhere.
        second = f"GET http://127.0.0.1:{private.port}/two HTTP/1.1\r\n\r\n"
        status, headers, body = await send(lease, (first + second).encode())
    assert status == 200
    assert body == b"hello /one?q=1 "
    assert headers["connection"] == "close"
    assert headers["proxy-connection"] == "close"
    assert "keep-alive" not in headers
    assert len(target.requests) == 1
    seen = target.requests[0]
    assert seen.lines[0] == "GET /one?q=1 HTTP/1.1"
    assert seen.header("Host") == [f"127.0.0.1:{target.port}"]
    assert seen.header("Connection") == ["close"]
    assert seen.header("X-Keep") == ["2"]
    for gone in ("Proxy-Authorization", "Proxy-Connection", "X-Drop", "Keep-Alive"):
        assert seen.header(gone) == [], gone
    assert private.connections == 0


async def test_plain_http_to_a_private_target_is_a_403_from_the_proxy(
    proxy: GuardProxy, private: Server
) -> None:
    async with proxy.lease() as lease:
        status, headers, _ = await send(
            lease, f"GET http://127.0.0.1:{private.port}/ HTTP/1.1\r\n\r\n".encode()
        )
    assert status == 403
    assert headers[GUARD_HEADER.lower()] == lease.marker
    assert headers["connection"] == "close"
    assert isinstance(lease.failure("127.0.0.1", private.port), SSRFBlocked)
    assert private.connections == 0


async def test_a_chunked_request_body_is_forwarded_whole(proxy: GuardProxy, target: Server) -> None:
    async with proxy.lease() as lease:
        status, _, body = await send(
            lease,
            f"POST http://127.0.0.1:{target.port}/post HTTP/1.1\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
            "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".encode(),
        )
    assert status == 200
    assert body == b"hello /post hello world"
    seen = target.requests[0]
    assert seen.header("Transfer-Encoding") == ["chunked"]
    assert seen.header("X-Trailer") == []


async def test_a_content_length_body_is_forwarded_whole(proxy: GuardProxy, target: Server) -> None:
    async with proxy.lease() as lease:
        status, _, body = await send(
            lease,
            f"POST http://127.0.0.1:{target.port}/p HTTP/1.1\r\n"
            "Content-Length: 7\r\n\r\npayload".encode(),
        )
    assert (status, body) == (200, b"hello /p payload")


async def test_a_websocket_upgrade_becomes_a_relay(proxy: GuardProxy, target: Server) -> None:
    async with proxy.lease() as lease, client(lease) as (reader, writer):
        writer.write(
            f"GET http://127.0.0.1:{target.port}/ws HTTP/1.1\r\n"
            "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n".encode()
        )
        status, headers = await read_head(reader)
        assert status == 101 and headers["connection"] == "Upgrade"
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(9), 30) == b"echo:ping"
    seen = target.requests[0]
    assert seen.header("Upgrade") == ["websocket"]
    assert seen.header("Connection") == ["Upgrade"]


# hostile input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        "GET http://x/ HTTP/1.1\r\nBad Header\r\n\r\n",
        "GET http://x/ HTTP/1.1\r\nA: b\nB: c\r\n\r\n",  # bare LF
        "GET http://x/ HTTP/1.1\r\n folded: x\r\n\r\n",
        "GET http://x/ HTTP/2.0\r\n\r\n",
        "GET  http://x/ HTTP/1.1\r\n\r\n",
        "GET http://x/ HTTP/1.1\r\nA: \x00\r\n\r\n",
        "partial head then EOF",
        # Well-formed but not what a proxy takes (sent to a lease's port):
        "GET / HTTP/1.1\r\nHost: x\r\n{auth}\r\n",  # origin-form
        "GET https://example.com/ HTTP/1.1\r\n{auth}\r\n",
        "GET http://user:pw@127.0.0.1:1/ HTTP/1.1\r\n{auth}\r\n",
        "CONNECT 127.0.0.1 HTTP/1.1\r\n{auth}\r\n",
        "CONNECT 127.0.0.1:99999 HTTP/1.1\r\n{auth}\r\n",
        "CONNECT [::1 HTTP/1.1\r\n{auth}\r\n",
        "CONNECT bad_host!:443 HTTP/1.1\r\n{auth}\r\n",
    ],
)
async def test_garbage_gets_400_and_the_proxy_keeps_serving(
    proxy: GuardProxy, target: Server, head: str
) -> None:
    async with proxy.lease() as lease, client(lease) as (reader, writer):
        writer.write(head.replace("{auth}", "").encode("latin-1"))
        writer.write_eof()
        raw = await asyncio.wait_for(reader.read(-1), 30)
    assert raw.startswith(b"HTTP/1.1 400 "), raw[:60]
    assert target.connections == 0
    await _still_serves(proxy, target)


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Content-Length: 3\r\nContent-Length: 4\r\n",
        "Content-Length: -1\r\n",
    ],
)
async def test_ambiguous_request_framing_is_refused(
    proxy: GuardProxy, target: Server, framing: str
) -> None:
    async with proxy.lease() as lease:
        status, _, _ = await send(
            lease,
            f"POST http://127.0.0.1:{target.port}/ HTTP/1.1\r\n{framing}\r\nabc".encode(),
        )
    assert status == 400
    assert target.requests == []


async def test_a_malformed_chunk_is_refused(proxy: GuardProxy, target: Server) -> None:
    async with proxy.lease() as lease:
        status, _, _ = await send(
            lease,
            f"POST http://127.0.0.1:{target.port}/ HTTP/1.1\r\n"
            "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".encode(),
        )
    assert status == 400


async def test_an_oversized_request_head_gets_431(proxy: GuardProxy, target: Server) -> None:
    async with proxy.lease() as lease:
        status, _, _ = await send(
            lease,
            f"GET http://127.0.0.1:{target.port}/ HTTP/1.1\r\n"
            f"X-Big: {'a' * 70_000}\r\n\r\n".encode(),
        )
    assert status == 431
    assert target.requests == []
    await _still_serves(proxy, target)


async def test_an_oversized_response_head_is_a_502(proxy: GuardProxy, target: Server) -> None:
    async with proxy.lease() as lease:
        status, headers, _ = await send(
            lease,
            f"GET http://127.0.0.1:{target.port}/huge-headers HTTP/1.1\r\n\r\n".encode(),
        )
    assert status == 502 and headers[GUARD_HEADER.lower()] == lease.marker
    err = lease.failure("127.0.0.1", target.port)
    assert err is not None and err.code is ErrorCode.INVALID_RESPONSE


async def _still_serves(proxy: GuardProxy, target: Server) -> None:
    async with proxy.lease() as lease:
        status, _, body = await send(
            lease, f"GET http://127.0.0.1:{target.port}/ok HTTP/1.1\r\n\r\n".encode()
        )
    assert (status, body) == (200, b"hello /ok ")


# lifecycle ---------------------------------------------------------------------------------------


async def test_ending_a_lease_closes_its_tunnels(target: Server) -> None:
    proxy = GuardProxy(EgressGuard([f"127.0.0.1:{target.port}"]))
    async with proxy:
        async with proxy.lease() as lease:
            reader, writer = await asyncio.open_connection("127.0.0.1", lease.port)
            writer.write(f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\n\r\n".encode())
            assert (await read_head(reader))[0] == 200
        # The context is gone: the tunnel it opened is closed, although the client kept it.
        assert await asyncio.wait_for(reader.read(-1), 30) == b""
        assert not lease.active
        writer.close()


async def test_closing_the_proxy_closes_every_connection(target: Server) -> None:
    proxy = GuardProxy(EgressGuard([f"127.0.0.1:{target.port}"]))
    async with (
        proxy,
        proxy.lease() as lease,
        client(lease) as (tunnel, writer),
        client(lease) as (idle, _),
        client(proxy) as (shared, _),
    ):
        writer.write(f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\n\r\n".encode())
        assert (await read_head(tunnel))[0] == 200
        await proxy.aclose()
        assert await asyncio.wait_for(tunnel.read(-1), 30) == b""
        assert await asyncio.wait_for(idle.read(-1), 30) == b""  # had sent nothing yet
        assert await asyncio.wait_for(shared.read(-1), 30) == b""
        with pytest.raises(TransientError):
            async with proxy.lease():
                pass


# upstream egress proxies ------------------------------------------------------------------------


async def test_connect_goes_through_the_upstream_proxy_with_its_credentials(
    target: Server,
) -> None:
    auth = "Basic " + base64.b64encode(f"scrapifie:{SECRET}".encode()).decode()
    upstream = await Server(proxy_auth=auth).start()
    try:
        async with GuardProxy(EgressGuard([f"127.0.0.1:{target.port}"])) as proxy:
            url = f"http://scrapifie:{SECRET}@127.0.0.1:{upstream.port}"
            async with proxy.lease(url) as lease, client(lease) as (reader, writer):
                writer.write(f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\n\r\n".encode())
                assert (await read_head(reader))[0] == 200
                writer.write(b"GET /tunnelled HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                raw = await asyncio.wait_for(reader.read(-1), 30)
                assert raw.endswith(b"hello /tunnelled ")
            async with proxy.lease(url) as lease:
                status, headers, body = await send(
                    lease,
                    f"GET http://127.0.0.1:{target.port}/plain HTTP/1.1\r\n\r\n".encode(),
                )
            assert status == 200 and headers["via"] == "1.1 upstream"
            assert body == f"via proxy http://127.0.0.1:{target.port}/plain".encode()
    finally:
        await upstream.close()
    connect, plain = upstream.requests
    assert connect.lines[0] == f"CONNECT 127.0.0.1:{target.port} HTTP/1.1"
    assert connect.header("Proxy-Authorization") == [auth]
    assert plain.lines[0] == f"GET http://127.0.0.1:{target.port}/plain HTTP/1.1"
    assert plain.header("Proxy-Authorization") == [auth]  # ours, not the lease's
    assert plain.header("Connection") == ["close"]


async def test_the_guard_still_checks_targets_behind_an_upstream(private: Server) -> None:
    upstream = await Server(proxy_auth="x").start()
    try:
        proxy = GuardProxy(EgressGuard())
        async with proxy, proxy.lease(f"http://127.0.0.1:{upstream.port}") as lease:
            status, _, _ = await send(
                lease, f"CONNECT 127.0.0.1:{private.port} HTTP/1.1\r\n\r\n".encode()
            )
    finally:
        await upstream.close()
    assert status == 403
    assert upstream.connections == 0 and private.connections == 0


async def test_upstream_failures_are_proxy_errors_without_credentials(target: Server) -> None:
    wrong = await Server(proxy_auth="Basic something-else").start()
    dead = await Server().start()
    dead_port = dead.port
    await dead.close()
    try:
        async with GuardProxy(EgressGuard([f"127.0.0.1:{target.port}"])) as proxy:
            for port in (dead_port, wrong.port):
                url = f"http://scrapifie:{SECRET}@127.0.0.1:{port}"
                for request in (
                    f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\n",
                    f"GET http://127.0.0.1:{target.port}/ HTTP/1.1\r\n",
                ):
                    async with proxy.lease(url) as lease:
                        status, headers, body = await send(lease, f"{request}\r\n".encode())
                    assert status == 502 and headers[GUARD_HEADER.lower()] == lease.marker
                    err = lease.failure("127.0.0.1", target.port)
                    assert isinstance(err, TransientError) and err.code is ErrorCode.PROXY_ERROR
                    assert f"http://127.0.0.1:{port}" in err.message
                    assert SECRET not in err.message and SECRET not in body.decode()
                    assert SECRET not in repr(lease) and lease.upstream_failures == 1
    finally:
        await wrong.close()
    assert target.connections == 0


def test_upstream_urls_are_parsed_without_leaking_credentials() -> None:
    up = Upstream.parse(f"http://user%40x:{SECRET}@proxy.example:3128")
    assert (up.host, up.port, up.label) == ("proxy.example", 3128, "http://proxy.example:3128")
    assert up.authorization == "Basic " + base64.b64encode(f"user@x:{SECRET}".encode()).decode()
    assert SECRET not in repr(up)
    with pytest.raises(ValueError) as err:
        Upstream.parse(f"socks5://u:{SECRET}@proxy.example:1080")
    assert SECRET not in str(err.value)
