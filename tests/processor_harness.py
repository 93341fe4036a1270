"""A tier processor driven with generated jobs and generated website behaviour.

Shared by the unit property test (records only) and the integration one (records written by the
real sinks into the real PostgreSQL). The fakes stand in for the network and for Kafka: the
producer refuses records over a size limit exactly as the broker does.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from schemas import Codec, ErrorCode, TopicSet, default_codec
from schemas.kafka import EventProducer
from schemas.options import FORBIDDEN_HEADERS, OPTION_NAMES
from schemas.records import FetchOptions, ScrapeRequest
from streams.config import FetchConfig, WorkerConfig
from streams.errors import BlockedError, FatalError, FetchError, TransientError
from streams.fetchers.base import FetchRequest, FetchResponse
from streams.metrics import StreamMetrics
from streams.politeness import SiteLimiter
from streams.politeness.limits import SiteLimit
from streams.tier.processor import InputRecord, TierProcessor

Record = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]


class KafkaLike:
    """Records a processor's output; refuses a record over ``max_bytes`` as Kafka does."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.sent: list[Record] = []

    async def send_many(self, records: Sequence[Record]) -> None:
        for _topic, key, value, headers in records:
            size = len(value) + len(key or b"") + sum(len(k) + len(v) for k, v in headers)
            if size > self.max_bytes:
                raise MessageSizeTooLargeError(f"{size} bytes")
        self.sent.extend(records)

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        await self.send_many([(topic, key, value, headers or [])])

    dead_letter = EventProducer.dead_letter  # the real one: it only calls send()


@dataclass
class Scripted:
    """A fetcher answering every request with one response, or raising one error."""

    response: FetchResponse | None = None
    error: FetchError | None = None
    requests: list[FetchRequest] = field(default_factory=list)

    async def fetch(self, request: FetchRequest) -> FetchResponse:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        assert self.response is not None
        body = self.response.body
        if request.max_body_bytes is not None and len(body) > request.max_body_bytes:
            raise FatalError(ErrorCode.TOO_LARGE, f"body over {request.max_body_bytes} bytes")
        return self.response


def processor(
    fetcher: Scripted,
    producer: KafkaLike,
    topics: TopicSet,
    max_message_bytes: int,
    limiter: SiteLimiter | None = None,
) -> TierProcessor:
    fast = SiteLimit(rate_per_s=1e6, concurrency=1000)
    return TierProcessor(
        "http",
        fetcher,
        producer,  # type: ignore[arg-type]
        default_codec(),
        topics,
        StreamMetrics(CollectorRegistry()),
        FetchConfig(),
        WorkerConfig(max_attempts_per_tier=2),
        limiter or SiteLimiter(fast),
        None,
        max_message_bytes=max_message_bytes,
    )


def input_record(codec: Codec, topics: TopicSet, job: ScrapeRequest) -> InputRecord:
    return InputRecord(
        topic=topics.tier("http"),
        partition=0,
        offset=0,
        key=b"site",
        value=codec.write(job),
        headers=[],
    )


# -- strategies ---------------------------------------------------------------------------------

# What aiohttp hands over for arbitrary header bytes: UTF-8 with surrogate escapes.
_site_text = st.binary(max_size=60).map(lambda b: b.decode("utf-8", "surrogateescape"))
# Strings a producer may put in an Avro record: any Unicode text without surrogates, NUL included.
_any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_header_names = st.one_of(
    st.sampled_from(sorted(FORBIDDEN_HEADERS)),
    st.sampled_from(["Accept", "X-Trace", "User-Agent", "Cookie", "X:Y", "Bad Name", "é"]),
    _any_text,
)
_option_strings = st.one_of(
    st.none(), _any_text, st.sampled_from(["load", "networkidle", "full", "#app", "a\x00b"])
)


def options() -> st.SearchStrategy[FetchOptions]:
    """FetchOptions: half valid, half with any values the Avro types allow."""
    assert set(_OPTIONS) == set(_VALID_OPTIONS) == set(OPTION_NAMES)  # every option generated
    return st.one_of(st.builds(FetchOptions, **_VALID_OPTIONS), st.builds(FetchOptions, **_OPTIONS))


_token = st.text(
    "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789-_!#$%&'*+.^`|~", min_size=1, max_size=20
)
_printable = st.text(
    st.characters(min_codepoint=0x20, exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40
)
_VALID_OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "timeout_s": st.one_of(st.none(), st.floats(0.01, 300)),
    "max_body_bytes": st.one_of(st.none(), st.integers(1, 10 * 1024 * 1024)),
    "headers": st.dictionaries(
        _token.filter(lambda n: n.lower() not in FORBIDDEN_HEADERS),
        _printable,
        max_size=4,
        dict_class=dict,
    ).filter(lambda h: len({n.lower() for n in h}) == len(h)),
    "wait_until": st.one_of(
        st.none(), st.sampled_from(["load", "domcontentloaded", "networkidle"])
    ),
    "wait_for": st.one_of(st.none(), _printable),
    "screenshot": st.none(),
    "block_resources": st.lists(st.sampled_from(["image", "font", "media", "stylesheet"])),
    "session_id": st.one_of(st.none(), _printable),
    "egress_pool": st.none(),
    "formats": st.lists(
        st.sampled_from(["html", "raw", "clean_html", "text", "markdown", "links", "metadata"]),
        min_size=1,
        max_size=4,
    ),
    "only_main_content": st.booleans(),
    "extract": st.one_of(
        st.none(),
        st.sampled_from(
            [
                '{"title":"h1"}',
                '{"a":{"all":true,"attr":"href","css":"a"},"n":{"type":"number","xpath":"//p"}}',
                '{"items":{"all":true,"css":"li","fields":{"t":"b"}}}',
            ]
        ),
    ),
    "max_age_s": st.one_of(st.none(), st.integers(0, 3600)),
    "max_credits": st.one_of(st.none(), st.integers(0, 20)),
}


_OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "timeout_s": st.one_of(st.none(), st.floats(allow_nan=True), st.just(0.05)),
    "max_body_bytes": st.one_of(
        st.none(),
        st.integers(-(2**63), 2**63 - 1),
        st.sampled_from([1, 100, 10_000, 2**31, 2**63 - 1]),
    ),
    "headers": st.dictionaries(_header_names, _any_text, max_size=4),
    "wait_until": _option_strings,
    "wait_for": _option_strings,
    "screenshot": _option_strings,
    "block_resources": st.lists(
        st.one_of(st.sampled_from(["image", "font"]), _any_text), max_size=3
    ),
    "session_id": _option_strings,
    "egress_pool": st.one_of(st.none(), st.just("")),
    "formats": st.lists(st.one_of(st.sampled_from(["markdown", "extract", "links"]), _any_text)),
    "only_main_content": st.booleans(),
    "extract": st.one_of(st.none(), _any_text, st.just('{"x":"a[[["}'), st.just('{"x":{}}')),
    "max_age_s": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    "max_credits": st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
}


def jobs(tenant: str) -> st.SearchStrategy[ScrapeRequest]:
    return st.builds(
        ScrapeRequest,
        job_id=st.uuids().map(str),
        tenant=st.just(tenant),
        url=st.one_of(
            st.just("http://example.com/page"),
            st.just("https://example.com/a?b=c"),
            st.builds(lambda p: f"http://example.com/{p}", _any_text),
            _any_text,
        ),
        tier=st.just("http"),
        max_tier=st.sampled_from(["http", "browser", "stealth", "bogus"]),
        attempt=st.integers(1, 5),
        tier_attempt=st.integers(1, 3),
        options=options(),
        created_at=st.just(datetime.now(UTC)),
        trace_id=st.one_of(st.just(""), _any_text),
        budget=st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1), st.integers(0, 12)),
    )


def _body(size: int, seed: int, compressible: bool) -> bytes:
    if compressible:
        return b"<html>" + b"a" * size
    return random.Random(seed).randbytes(size)


responses = st.builds(
    lambda status, headers, size, seed, compressible, ctype, final: FetchResponse(
        url="http://example.com/page",
        final_url=final,
        status=status,
        headers=headers,
        body=_body(size, seed, compressible),
        content_type=ctype,
        wire_bytes=size,
    ),
    status=st.one_of(st.just(200), st.integers(100, 599)),
    headers=st.dictionaries(_site_text, _site_text, max_size=6),
    size=st.one_of(st.integers(0, 2000), st.integers(100_000, 600_000)),
    seed=st.integers(0, 2**32),
    compressible=st.booleans(),
    ctype=st.one_of(st.none(), _site_text, st.just("text/html; charset=utf-8")),
    final=st.one_of(st.just("http://example.com/page"), _site_text),
)

errors = st.builds(
    lambda cls, code, message: cls(code, message),
    st.sampled_from([TransientError, BlockedError, FatalError]),
    st.sampled_from(list(ErrorCode)),
    st.one_of(_site_text, _any_text),
)


def new_job_id() -> str:
    return str(uuid.uuid4())
