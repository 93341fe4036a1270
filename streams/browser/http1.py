"""HTTP/1.1 on the wire for the guard proxy (RFC 9110/9112): request heads parsed and checked,
requests re-framed for the next hop, response heads rewritten for the client, and the byte
copies and relays over asyncio streams. A request the proxy refuses raises :class:`Reject`,
answered with :func:`respond`."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from schemas import ErrorCode
from streams.browser.lease import Upstream
from streams.errors import FatalError

__all__ = [
    "GUARD_HEADER",
    "MAX_HEAD_BYTES",
    "MAX_RESPONSE_HEAD_BYTES",
    "STATUS_LINE",
    "Reject",
    "Request",
    "absolute_target",
    "cancel_all",
    "client_gone",
    "close",
    "copy_chunked",
    "copy_exactly",
    "copy_until_eof",
    "format_authority",
    "is_websocket_upgrade",
    "parse_authority",
    "parse_request",
    "relay",
    "request_framing",
    "request_head",
    "respond",
    "rewrite_response_head",
    "why",
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
STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([1-5][0-9][0-9])(?: ([^\r\n]*))?")
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


class Reject(Exception):
    """A request the proxy answers itself, with this status, then closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class Request:
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


# parsing --------------------------------------------------------------------------------------


def parse_request(head: bytes) -> Request:
    lines = head[:-4].split(b"\r\n")
    if any(b"\n" in line or b"\r" in line for line in lines):
        raise Reject(400, "bare CR or LF in the request head")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _VERSION.fullmatch(parts[2]):
        raise Reject(400, "malformed request line")
    target = parts[1]
    if not target or any(c < 0x21 or c > 0x7E for c in target):
        raise Reject(400, "malformed request target")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise Reject(400, "malformed header line")
        value = value.strip(b" \t")
        if _FIELD_VALUE_BAD.search(value):
            raise Reject(400, "control character in a header value")
        headers.append((name.decode("ascii"), value.decode("latin-1")))
    return Request(parts[0].decode("ascii"), target.decode("ascii"), parts[2], headers)


def format_authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_authority(text: str, default_port: int | None) -> tuple[str, int]:
    """(host, port) of ``host[:port]`` / ``[v6][:port]``; raises Reject(400)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise Reject(400, "malformed IPv6 authority")
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Reject(400, "malformed IPv6 address") from None
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
        if not _REG_NAME.fullmatch(host):
            raise Reject(400, "malformed host")
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6:
            raise Reject(400, "malformed port")
        port = int(rest[1:])
    elif default_port is not None:
        port = default_port
    else:
        raise Reject(400, "CONNECT needs host:port")
    if not 0 < port < 65536:
        raise Reject(400, "port out of range")
    return host.lower(), port


def absolute_target(target: str) -> tuple[str, int, str, str]:
    """(host, port, authority, origin-form path) of an absolute-form ``http://`` target."""
    if target[:7].lower() != "http://":
        raise Reject(400, "the proxy takes CONNECT or absolute-form http:// requests only")
    rest = target[7:]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if "@" in authority:
        raise Reject(400, "userinfo in the request target")
    if not path.startswith("/"):
        path = "/" + path
    host, port = parse_authority(authority, default_port=80)
    return host, port, authority, path


def request_framing(req: Request) -> tuple[bool, int]:
    """(chunked, content length) of the request body; refuses ambiguous framing."""
    te = [t.strip().lower() for v in req.values("transfer-encoding") for t in v.split(",")]
    lengths = {v.strip() for v in req.values("content-length")}
    if te:
        if te != ["chunked"] or req.version == b"HTTP/1.0":
            raise Reject(400, "unsupported Transfer-Encoding")
        if lengths:
            raise Reject(400, "both Content-Length and Transfer-Encoding")
        return True, 0
    if not lengths:
        return False, 0
    if len(lengths) > 1 or not all(c.isdigit() for c in next(iter(lengths))):
        raise Reject(400, "invalid Content-Length")
    value = next(iter(lengths))
    if not value or len(value) > 18:
        raise Reject(400, "invalid Content-Length")
    return False, int(value)


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    return {
        t.strip().lower() for k, v in headers if k.lower() == "connection" for t in v.split(",")
    }


def is_websocket_upgrade(req: Request) -> bool:
    return (
        req.method == "GET"
        and "upgrade" in _connection_tokens(req.headers)
        and [v.strip().lower() for v in req.values("upgrade")] == ["websocket"]
    )


def request_head(
    req: Request,
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


def rewrite_response_head(raw: bytes, host: str, port: int) -> tuple[int, bytes]:
    lines = raw[:-4].split(b"\r\n")
    match = STATUS_LINE.fullmatch(lines[0])
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


async def respond(
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


async def copy_exactly(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int
) -> None:
    left = length
    while left:
        data = await reader.read(min(left, _CHUNK))
        if not data:
            raise Reject(400, "request body shorter than its Content-Length")
        left -= len(data)
        writer.write(data)
        await writer.drain()


async def copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
                raise Reject(400, "malformed chunk size")
            size = int(size_text, 16)
            if size == 0:
                for _ in range(_MAX_TRAILER_LINES):
                    if await reader.readuntil(b"\r\n") == b"\r\n":
                        writer.write(b"0\r\n\r\n")
                        return
                raise Reject(400, "too many trailer lines")
            writer.write(b"%x\r\n" % size)
            await copy_exactly(reader, writer, size)
            if await reader.readexactly(2) != b"\r\n":
                raise Reject(400, "chunk data not followed by CRLF")
            writer.write(b"\r\n")
    except asyncio.LimitOverrunError:
        raise Reject(400, "chunk line too long") from None
    except asyncio.IncompleteReadError:
        raise Reject(400, "request body ended inside a chunk") from None


async def copy_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()


async def client_gone(reader: asyncio.StreamReader) -> None:
    """Returns when the client closes; anything it sends meanwhile is not forwarded (one
    request per connection)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(_CHUNK):
            pass


async def relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Bytes both ways until either side closes (then both are closed by the callers)."""
    tasks = {
        asyncio.ensure_future(copy_until_eof(reader, up_writer)),
        asyncio.ensure_future(copy_until_eof(up_reader, writer)),
    }
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_all(tasks)


async def cancel_all(tasks: set[asyncio.Task[None]]) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


async def close(writer: asyncio.StreamWriter) -> None:
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


def why(exc: BaseException | None) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__ if exc is not None else "no address"
