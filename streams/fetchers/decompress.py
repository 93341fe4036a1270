"""Bounded content decoding: never produce more than ``limit`` bytes, whatever the input.

httpx decodes without bound (PITFALLS: 32 KB of zstd became 1 GiB), so the http tier reads raw
bytes and decodes here, checking the size while decoding. One coding is supported per response
(gzip, deflate, or identity); stacked codings are refused rather than half-decoded.
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


def _corrupt(encoding: str, detail: str) -> FatalError:
    return FatalError(ErrorCode.DECODE_ERROR, f"corrupt {encoding} body: {detail}")


class _Inflater:
    """gzip (multi-member) or deflate (zlib-wrapped, or raw as some servers send it)."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._gzip = "gzip" in encoding
        self._obj: zlib._Decompress | None = (
            zlib.decompressobj(16 + zlib.MAX_WBITS) if self._gzip else None
        )
        self._head = b""  # deflate: bytes kept until the zlib header can be recognised

    def _new(self) -> zlib._Decompress:
        return zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes, max_out: int) -> bytes:
        if self._obj is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            cmf, flg = self._head[0], self._head[1]
            wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            self._obj = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            data, self._head = self._head, b""
        out = bytearray()
        while data:
            try:
                out += self._obj.decompress(data, max_out - len(out) + 1)
            except zlib.error as exc:
                raise _corrupt(self._encoding, str(exc)) from exc
            if len(out) > max_out:
                return bytes(out)  # the caller sees more than allowed and stops
            data = self._obj.unconsumed_tail
            if self._obj.eof:
                rest = self._obj.unused_data
                if not (self._gzip and rest.strip(b"\0")):
                    break
                self._obj = self._new()  # next gzip member
                data = rest
        return bytes(out)

    def finish(self) -> None:
        if self._obj is None:
            if self._head:
                raise _corrupt(self._encoding, "body too short")
            return
        if not self._obj.eof:
            raise _corrupt(self._encoding, "body ends before the compressed stream does")


class BoundedDecoder:
    """Decodes one Content-Encoding into at most ``limit`` bytes; ``finish()`` checks the end."""

    def __init__(self, encodings: Sequence[str], limit: int) -> None:
        chain = [e.strip().lower() for e in encodings if e.strip()]
        chain = [e for e in chain if e != "identity"]
        unsupported = [e for e in chain if e not in SUPPORTED]
        if unsupported:
            raise FatalError(
                ErrorCode.DECODE_ERROR, f"unsupported content-encoding {', '.join(unsupported)}"
            )
        if len(chain) > 1:
            raise FatalError(
                ErrorCode.DECODE_ERROR,
                f"stacked content-encodings not supported: {', '.join(chain)}",
            )
        self._inflater = _Inflater(chain[0]) if chain else None
        self._limit = limit
        self._out = bytearray()
        self.raw_bytes = 0

    def feed(self, chunk: bytes) -> None:
        self.raw_bytes += len(chunk)
        remaining = self._limit - len(self._out)
        data = self._inflater.feed(chunk, remaining) if self._inflater else chunk
        if len(data) > remaining:
            raise TooLarge(self._limit)
        self._out += data

    def finish(self) -> None:
        """Raise DECODE_ERROR if the body ended inside a compressed stream (truncated)."""
        if self._inflater is not None:
            self._inflater.finish()

    def result(self) -> bytes:
        return bytes(self._out)


def parse_content_encoding(value: str | None) -> list[str]:
    return [] if not value else value.split(",")
