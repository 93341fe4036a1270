"""Bounded content decoding: never produce more than ``limit`` bytes, whatever the input.

httpx decodes without bound (PITFALLS: 32 KB of zstd became 1 GiB), so the http tier reads raw
bytes and decodes here, checking the size before and after decoding.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from schemas import ErrorCode
from streams.errors import FatalError

SUPPORTED = frozenset({"identity", "gzip", "x-gzip", "deflate"})


class TooLarge(FatalError):
    def __init__(self, limit: int) -> None:
        super().__init__(ErrorCode.TOO_LARGE, f"body exceeds the {limit}-byte limit")


class _Zlib:
    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        # gzip: wbits 16+MAX; deflate: zlib-wrapped, with a raw-deflate fallback for old servers.
        self._obj = zlib.decompressobj(
            16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
        )
        self._started = False

    def feed(self, data: bytes, max_out: int) -> bytes:
        try:
            out = self._obj.decompress(data, max_out + 1)
        except zlib.error as exc:
            if self._encoding == "deflate" and not self._started:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
                self._started = True
                return self.feed(data, max_out)
            raise FatalError(
                ErrorCode.DECODE_ERROR, f"corrupt {self._encoding} body: {exc}"
            ) from exc
        self._started = True
        # Output is capped at max_out + 1 bytes, so "more than allowed" shows as len > max_out.
        return out


class BoundedDecoder:
    """Decodes a chain of Content-Encodings (applied in order) into at most ``limit`` bytes."""

    def __init__(self, encodings: Sequence[str], limit: int) -> None:
        chain = [e.strip().lower() for e in encodings if e.strip()]
        unsupported = [e for e in chain if e not in SUPPORTED]
        if unsupported:
            raise FatalError(
                ErrorCode.DECODE_ERROR, f"unsupported content-encoding {', '.join(unsupported)}"
            )
        # Decode in reverse order of application; identity is a no-op.
        self._decoders = [_Zlib(e) for e in reversed(chain) if e != "identity"]
        self._limit = limit
        self._out = bytearray()
        self.raw_bytes = 0

    def feed(self, chunk: bytes) -> None:
        self.raw_bytes += len(chunk)
        data = chunk
        remaining = self._limit - len(self._out)
        for dec in self._decoders:
            data = dec.feed(data, remaining)
        if len(data) > remaining:
            raise TooLarge(self._limit)
        self._out += data

    def result(self) -> bytes:
        return bytes(self._out)


def parse_content_encoding(value: str | None) -> list[str]:
    return [] if not value else value.split(",")
