"""Serving stored objects (a fetched body, a screenshot) from the gateway.

Two rules. A fetched page must never run as the gateway's origin: every such response says
``X-Content-Type-Options: nosniff`` and ``Content-Security-Policy: sandbox`` (no scripts, an
opaque origin). And a small compressed object must never become one large buffer inside the
event loop (a few KB of gzip can hold gigabytes of zeros): a body is sent gzipped as stored when
the client accepts gzip, else inflated in steps of at most :data:`CHUNK_BYTES` and streamed.
The compressed object itself is loaded whole: it is bounded by the result topic's record size.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Mapping

from aiohttp import web

from connectors.gateway.api import ApiError
from connectors.gateway.views import stored_formats
from connectors.storage import ObjectStore, StorageError
from documents import decode_html
from schemas.formats import Format

__all__ = [
    "CHUNK_BYTES",
    "SAFE_HEADERS",
    "accepts_gzip",
    "inline_formats",
    "media_type",
    "send_format",
    "send_gzipped",
]

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
SAFE_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
}


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip (RFC 9110 §12.5.3: ``gzip``, its alias
    ``x-gzip``, or ``*``, with a q-value above 0)."""
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        name, _, params = item.partition(";")
        name = name.strip().lower()
        if not name:
            continue
        weight = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0
        weights[name] = weight
    for name in ("gzip", "x-gzip", "*"):
        if name in weights:
            return weights[name] > 0  # NaN is not
    return False


def media_type(value: str | None) -> str:
    """``value`` as a Content-Type if it is one printable ASCII line, else octet-stream."""
    if value and value.isascii() and value.isprintable() and "/" in value:
        return value
    return "application/octet-stream"


class _Inflater:
    """Gunzips ``data`` (one or more members) in steps of at most ``CHUNK_BYTES`` of output."""

    def __init__(self, data: bytes) -> None:
        self._inflate = zlib.decompressobj(wbits=31)
        self._input = data

    def step(self) -> bytes:
        """The next piece of the body; ``b""`` at its end. Raises ``zlib.error`` on corrupt
        data and ``EOFError`` when the data ends inside a member."""
        while True:
            if self._inflate.eof:
                rest = self._inflate.unused_data.lstrip(b"\x00")  # gzip's trailing padding
                if not rest:
                    return b""
                self._inflate, self._input = zlib.decompressobj(wbits=31), rest
            out = self._inflate.decompress(self._input, CHUNK_BYTES)
            self._input = self._inflate.unconsumed_tail
            if out:
                return out
            if not self._input and not self._inflate.eof:
                raise EOFError("the stored object ends inside its gzip stream")


async def send_gzipped(
    request: web.Request, data: bytes, headers: Mapping[str, str]
) -> web.StreamResponse:
    """Answer with the body ``data`` holds gzipped: as stored (``Content-Encoding: gzip``) if
    the client accepts gzip, else inflated step by step into a chunked response."""
    headers = {**headers, **SAFE_HEADERS, "Vary": "Accept-Encoding"}
    if accepts_gzip(request.headers.get("Accept-Encoding", "")):
        return web.Response(body=data, headers={**headers, "Content-Encoding": "gzip"})
    inflater = _Inflater(data)
    piece = inflater.step()  # a corrupt object fails here, while an error can still be sent
    resp = web.StreamResponse(headers=headers)
    await resp.prepare(request)
    sent = 0
    try:
        while piece:
            await resp.write(piece)
            sent += len(piece)
            await asyncio.sleep(0)  # one step per loop turn, whatever the client's speed
            piece = inflater.step()
    except (zlib.error, EOFError) as exc:
        # The status line is out: all that is left is to end the connection without the final
        # chunk, so the client sees a truncated body rather than a complete one.
        log.error("stored object for %s is corrupt after %d bytes: %s", request.path, sent, exc)
        if request.transport is not None:
            request.transport.abort()
        return resp
    await resp.write_eof()
    return resp


FORMAT_NAMES = tuple(f.value for f in Format)
# An html answer is transcoded in memory: the stored page is at most the deployment's body cap
# (options.max_body_bytes ≤ JobLimits.max_body_bytes), and a stored object inflating past this
# is refused rather than buffered.
MAX_TRANSCODE_BYTES = 64 * 1024 * 1024


async def send_format(
    request: web.Request,
    row: dict[str, object],
    fmt: str | None,
    store: ObjectStore,
    trace_id: str,
) -> web.StreamResponse:
    """``GET /v1/jobs/{id}/content[?format=…]`` for the caller's job ``row``.

    No format: the page as fetched, with its own Content-Type (``raw``). ``html``: the page
    transcoded to UTF-8 from whatever charset it came in. Derived formats and the screenshot:
    their stored objects."""
    if fmt is not None and fmt not in FORMAT_NAMES:
        raise ApiError(400, "invalid_format", f"format is one of {', '.join(FORMAT_NAMES)}")
    have = stored_formats(dict(row))
    name = fmt or Format.RAW.value
    if name not in have:
        if row.get("status") != "succeeded":
            raise ApiError(
                404,
                "no_content",
                f"job is {row.get('status')}; formats exist only for succeeded jobs",
            )
        raise ApiError(
            404,
            "format_not_available",
            f"this job has no {name}: ask for it in options.formats"
            f" (it has: {', '.join(have) or 'nothing'})",
        )
    key, media, _size = have[name]
    try:
        data = await store.get(key)
    except StorageError as exc:
        raise ApiError(
            503, "unavailable", "object storage is unavailable; retry shortly", {"Retry-After": "5"}
        ) from exc
    if data is None:
        raise ApiError(404, "format_not_available", "object not found in storage")
    headers = {"X-Request-ID": trace_id}
    if name == Format.SCREENSHOT:
        return web.Response(body=data, headers={"Content-Type": media, **SAFE_HEADERS})
    if name == Format.HTML:
        page_type = str(row.get("content_type") or "")
        if page_type and "html" not in page_type.lower():
            name, media = Format.RAW.value, page_type  # not a page: html is what was fetched
        else:
            body = await asyncio.to_thread(_transcode, data, page_type or None)
            return web.Response(body=body, headers={"Content-Type": media, **SAFE_HEADERS})
    return await send_gzipped(request, data, {**headers, "Content-Type": media_type(media)})


def _transcode(data: bytes, content_type: str | None) -> bytes:
    """The stored gzip of a page as UTF-8 text."""
    inflate = zlib.decompressobj(wbits=31)
    body = inflate.decompress(data, MAX_TRANSCODE_BYTES)
    if inflate.unconsumed_tail:
        raise ApiError(413, "too_large", "the page is too large to transcode; ask for raw")
    text, _encoding = decode_html(body, content_type)
    return text.encode("utf-8", "replace")


INLINE_MAX_BYTES = 64 * 1024
_JSON_FORMATS = frozenset({Format.LINKS, Format.METADATA, Format.EXTRACT})


async def inline_formats(row: dict[str, object], store: ObjectStore) -> dict[str, object]:
    """The job's formats of at most :data:`INLINE_MAX_BYTES` each, for ``?wait=&inline=true``:
    text formats as strings (``html`` in UTF-8), links/metadata/extract as JSON values. Larger
    ones, ``raw`` and the screenshot are left to their URLs (``formats``)."""
    out: dict[str, object] = {}
    for name, (key, _media, size) in stored_formats(dict(row)).items():
        if name in (Format.RAW, Format.SCREENSHOT) or size is None or size > INLINE_MAX_BYTES:
            continue
        try:
            data = await store.get(key)
        except StorageError:
            continue  # the URL still serves it once storage answers
        if data is None:
            continue
        if name == Format.HTML:
            text = _transcode(data, str(row.get("content_type") or "") or None).decode("utf-8")
        else:
            text = zlib.decompress(data, wbits=31).decode("utf-8", "replace")
        out[name] = json.loads(text) if name in _JSON_FORMATS else text
    return out
