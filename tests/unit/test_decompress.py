"""streams.fetchers.decompress.BoundedDecoder: decode Content-Encoding, never past the limit."""

from __future__ import annotations

import gzip
import os
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import pytest

from schemas import ErrorCode
from streams.errors import FatalError
from streams.fetchers.decompress import BoundedDecoder, TooLarge, parse_content_encoding

pytestmark = pytest.mark.unit

BODY = b"".join(b"<p>line %d of a compressible page</p>\n" % i for i in range(2000))
MB = 1024 * 1024


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def decode(encodings: list[str], data: bytes, limit: int, chunk: int = 7) -> bytes:
    dec = BoundedDecoder(encodings, limit)
    for part in chunks(data, chunk):
        dec.feed(part)
    dec.finish()
    return dec.result()


def zlib_wrapped(data: bytes) -> bytes:
    return zlib.compress(data, 6)


def raw_deflate(data: bytes) -> bytes:
    obj = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return obj.compress(data) + obj.flush()


@pytest.mark.parametrize("encodings", [[], ["identity"], ["Identity "], [""]])
def test_identity(encodings: list[str]) -> None:
    assert decode(encodings, BODY, limit=len(BODY)) == BODY


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", " GZIP "])
@pytest.mark.parametrize("chunk", [1, 7, 4096, 10 * MB])
def test_gzip(encoding: str, chunk: int) -> None:
    data = gzip.compress(BODY)
    dec = BoundedDecoder([encoding], len(BODY))
    for part in chunks(data, chunk):
        dec.feed(part)
    assert dec.result() == BODY
    assert dec.raw_bytes == len(data)


@pytest.mark.parametrize("chunk", [1, 3, 7, 4096])
def test_deflate_zlib_wrapped(chunk: int) -> None:
    assert decode(["deflate"], zlib_wrapped(BODY), len(BODY), chunk) == BODY


@pytest.mark.parametrize("chunk", [2, 3, 7, 4096])
def test_deflate_raw(chunk: int) -> None:
    assert decode(["deflate"], raw_deflate(BODY), len(BODY), chunk) == BODY


def test_deflate_raw_one_byte_chunks() -> None:
    assert decode(["deflate"], raw_deflate(BODY), len(BODY), chunk=1) == BODY


def test_stacked_encodings_are_refused_not_half_decoded() -> None:
    with pytest.raises(FatalError) as info:
        BoundedDecoder(parse_content_encoding("deflate, gzip"), len(BODY))
    assert info.value.code is ErrorCode.DECODE_ERROR
    # identity layers are no-ops and do not count as stacking
    data = gzip.compress(BODY)
    assert decode(parse_content_encoding("identity, gzip"), data, len(BODY), 5) == BODY


def test_truncated_gzip_is_a_decode_error() -> None:
    data = gzip.compress(os.urandom(1000))
    dec = BoundedDecoder(["gzip"], limit=2000)
    dec.feed(data[: len(data) // 2])
    with pytest.raises(FatalError) as info:
        dec.finish()
    assert info.value.code is ErrorCode.DECODE_ERROR


def test_multi_member_gzip_is_decoded_whole() -> None:
    data = gzip.compress(b"first ") + gzip.compress(b"second")
    assert decode(["gzip"], data, 100, 3) == b"first second"


def test_exactly_at_the_limit_is_accepted() -> None:
    assert decode(["gzip"], gzip.compress(BODY), limit=len(BODY)) == BODY
    assert decode([], BODY, limit=len(BODY)) == BODY


@pytest.mark.parametrize(
    ("encodings", "data"),
    [
        ([], BODY),
        (["gzip"], gzip.compress(BODY)),
        (["deflate"], zlib_wrapped(BODY)),
        (["deflate"], raw_deflate(BODY)),
    ],
)
def test_one_byte_over_the_limit_is_too_large(encodings: list[str], data: bytes) -> None:
    dec = BoundedDecoder(encodings, len(BODY) - 1)
    with pytest.raises(TooLarge) as info:
        for part in chunks(data, 4096):
            dec.feed(part)
    assert info.value.code is ErrorCode.TOO_LARGE
    assert isinstance(info.value, FatalError)
    assert len(dec.result()) <= len(BODY) - 1


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """50 MB of zeros, gzip-compressed (about 50 KB), built without holding 50 MB."""
    obj = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MB)
    out = [obj.compress(zeros) for _ in range(50)]
    out.append(obj.flush())
    return b"".join(out)


def test_gzip_bomb_is_stopped_at_the_limit(gzip_bomb: bytes) -> None:
    assert len(gzip_bomb) < MB  # it really is a bomb
    limit = MB
    dec = BoundedDecoder(["gzip"], limit)
    fed = 0
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(TooLarge):
            for part in chunks(gzip_bomb, 16 * 1024):
                fed += len(part)
                dec.feed(part)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    assert peak < 8 * MB, f"peak {peak} bytes while decoding a 50 MB bomb with a 1 MB limit"
    assert elapsed < 2.0
    assert fed < len(gzip_bomb)  # stopped early, not after inflating everything
    assert len(dec.result()) <= limit


def test_gzip_bomb_in_one_chunk(gzip_bomb: bytes) -> None:
    dec = BoundedDecoder(["gzip"], MB)
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge):
            dec.feed(gzip_bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB


@pytest.mark.parametrize("encodings", [["br"], ["zstd"], ["gzip", "br"], ["compress"]])
def test_unsupported_encoding(encodings: list[str]) -> None:
    with pytest.raises(FatalError) as info:
        BoundedDecoder(encodings, MB)
    assert info.value.code is ErrorCode.DECODE_ERROR
    assert "unsupported" in info.value.message


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]


@pytest.mark.parametrize(
    ("name", "corrupt"),
    [
        ("bad magic", lambda d: _flip(d, 0)),
        ("bad method", lambda d: _flip(d, 2)),
        ("bad crc32", lambda d: _flip(d, len(d) - 6)),
        ("bad isize", lambda d: _flip(d, len(d) - 2)),
        ("not gzip at all", lambda d: b"this is plain text, not gzip" * 10),
    ],
)
def test_corrupt_gzip(name: str, corrupt: Callable[[bytes], bytes]) -> None:
    data = corrupt(gzip.compress(BODY))
    with pytest.raises(FatalError) as info:
        decode(["gzip"], data, limit=10 * len(BODY), chunk=512)
    assert info.value.code is ErrorCode.DECODE_ERROR, name


def test_corrupt_deflate() -> None:
    with pytest.raises(FatalError) as info:
        decode(["deflate"], b"\xff" * 64, limit=MB, chunk=16)
    assert info.value.code is ErrorCode.DECODE_ERROR


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, []),
        ("", []),
        ("gzip", ["gzip"]),
        ("deflate, gzip", ["deflate", " gzip"]),
    ],
)
def test_parse_content_encoding(header: str | None, expected: list[str]) -> None:
    assert parse_content_encoding(header) == expected
