"""The invariant the pipeline rests on, for whatever a website sends and whatever options a job
carries: one attempt emits exactly one metering event and exactly one of a final result, a retry
or an escalation; every record decodes, fits in Kafka and holds only storable strings. The
handler never raises (an exception would stop the partition)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas import ErrorCode, TopicSet, default_codec
from schemas.records import ScrapeRequest, ScrapeResult
from streams.errors import FetchError, TransientError
from streams.fetchers.base import FetchResponse
from streams.politeness import SiteLimit, SiteLimiter
from tests.processor_harness import (
    KafkaLike,
    Scripted,
    errors,
    input_record,
    jobs,
    new_job_id,
    processor,
    responses,
)

pytestmark = pytest.mark.unit

TOPICS = TopicSet("t.")
CODES = {c.value for c in ErrorCode}
# Small limits so that generated bodies reach them: the processor's record limit, and a broker
# that sometimes accepts less than the processor assumes (a topic configured apart).
LIMIT = 256 * 1024


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def check_attempt(sent: list[Any], job: ScrapeRequest, broker_limit: int) -> ScrapeResult | None:
    """Assert the invariant over one attempt's records; return the final result, if any."""
    codec = default_codec()
    by_topic: dict[str, list[Any]] = {}
    for topic, _key, value, _headers in sent:
        assert topic != TOPICS.dlq, "a decodable job must end, not go to the DLQ"
        assert len(value) <= broker_limit
        if topic in (TOPICS.tier("browser"), TOPICS.tier("stealth"), *_delays()):
            record: Any = codec.read_request(value)
        else:
            record = codec.read_any(value)
        for text in _strings(dataclasses.asdict(record)):
            assert "\x00" not in text
            text.encode("utf-8")  # no lone surrogate
        by_topic.setdefault(topic, []).append(record)
    metering = by_topic.pop(TOPICS.metering)
    assert len(metering) == 1 and metering[0].job_id == job.job_id
    by_topic.pop(TOPICS.routing, None)
    results = by_topic.pop(TOPICS.results, [])
    escalations = by_topic.pop(TOPICS.escalations, [])
    handed_on = [r for records in by_topic.values() for r in records]
    assert len(results) + len(handed_on) == 1, (results, handed_on)
    assert len(escalations) == (1 if handed_on and handed_on[0].tier != "http" else 0)
    if not results:
        return None
    result: ScrapeResult = results[0]
    assert result.job_id == job.job_id and result.status in ("succeeded", "failed")
    if result.status == "failed":
        assert result.error_code in CODES and result.content is None
        assert metering[0].credits == 0
    else:
        assert result.content is not None
        body = gzip.decompress(result.content)
        assert hashlib.sha256(body).hexdigest() == result.content_sha256
        assert len(body) == result.content_bytes
    return result


def _delays() -> list[str]:
    return [TOPICS.delay("http", s) for s in (5, 30, 300)]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    job=jobs("acme"),
    answer=st.one_of(responses, errors),
    broker_limit=st.sampled_from([LIMIT, LIMIT // 2]),
)
async def test_every_attempt_ends_in_exactly_one_way(
    job: ScrapeRequest, answer: FetchResponse | FetchError, broker_limit: int
) -> None:
    fetcher = (
        Scripted(error=answer) if isinstance(answer, FetchError) else Scripted(response=answer)
    )
    producer = KafkaLike(broker_limit)
    proc = processor(fetcher, producer, TOPICS, LIMIT)
    await proc.handle(input_record(default_codec(), TOPICS, job))
    result = check_attempt(producer.sent, job, broker_limit)
    status, code = (result.status, result.error_code) if result else (None, None)
    event(f"fetched={bool(fetcher.requests)} {status} {code}")
    if result is not None and code == ErrorCode.INVALID_REQUEST and not fetcher.requests:
        assert result.error_message  # says what to fix


async def test_a_result_larger_than_kafka_takes_fails_too_large() -> None:
    body = random.Random(7).randbytes(1024 * 1024)  # 1 MiB that gzip cannot shrink
    response = FetchResponse(
        url="http://example.com/",
        final_url="http://example.com/",
        status=200,
        headers={"x-legacy": "caf\udce9"},
        body=body,
        content_type="text/html",
        wire_bytes=len(body),
    )
    job = _plain_job()
    producer = KafkaLike(LIMIT)
    proc = processor(Scripted(response=response), producer, TOPICS, LIMIT)
    await proc.handle(input_record(default_codec(), TOPICS, job))
    result = check_attempt(producer.sent, job, LIMIT)
    assert result is not None and (result.status, result.error_code) == ("failed", "too_large")
    assert "max_body_bytes" in (result.error_message or "")


async def test_a_legacy_header_byte_is_kept_as_latin_1() -> None:
    response = FetchResponse(
        url="http://example.com/",
        final_url="http://example.com/",
        status=200,
        headers={"x-legacy": "caf\udce9", "x-nul": "a\x00b"},
        body=b"<html>fine</html>",
        content_type="text/html",
        wire_bytes=17,
    )
    job = _plain_job()
    producer = KafkaLike(LIMIT)
    await processor(Scripted(response=response), producer, TOPICS, LIMIT).handle(
        input_record(default_codec(), TOPICS, job)
    )
    result = check_attempt(producer.sent, job, LIMIT)
    assert result is not None and result.status == "succeeded"
    assert result.response_headers == {"x-legacy": "café", "x-nul": "ab"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"headers": {"Content-Length": "0"}}, "may not be set"),
        ({"headers": {"Transfer-Encoding": "chunked"}}, "may not be set"),
        ({"headers": {"X:Y": "1"}}, "not a valid header name"),
        ({"headers": {"X-A": "1\r\nX-B: 2"}}, "control characters"),
        ({"wait_for": "#a\x00"}, "control characters"),
        ({"max_body_bytes": 2**63 - 1}, "at most"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"wait_until": "sometime"}, "wait_until"),
    ],
)
async def test_options_a_producer_sent_straight_to_kafka_fail_the_job(
    options: dict[str, Any], message: str
) -> None:
    job = _plain_job()
    job.options = dataclasses.replace(job.options, **options)
    producer = KafkaLike(LIMIT)
    fetcher = Scripted(error=AssertionError("never fetched"))  # type: ignore[arg-type]
    await processor(fetcher, producer, TOPICS, LIMIT).handle(
        input_record(default_codec(), TOPICS, job)
    )
    result = check_attempt(producer.sent, job, LIMIT)
    assert result is not None and result.error_code == "invalid_request"
    assert message in (result.error_message or "")
    assert not fetcher.requests


def _plain_job() -> ScrapeRequest:
    return ScrapeRequest(
        job_id=new_job_id(), tenant="acme", url="http://example.com/", created_at=datetime.now(UTC)
    )


@pytest.mark.parametrize(("timeout_s", "slows_the_site"), [(0.05, False), (None, True)])
async def test_a_deadline_the_job_chose_does_not_slow_the_site_for_others(
    timeout_s: float | None, slows_the_site: bool
) -> None:
    limiter = SiteLimiter(SiteLimit(rate_per_s=10, concurrency=4))
    before = limiter.delay_s("example.com")
    for _ in range(3):
        job = _plain_job()
        job.options.timeout_s = timeout_s
        producer = KafkaLike(LIMIT)
        fetcher = Scripted(error=TransientError(ErrorCode.TIMEOUT, "no answer in time"))
        await processor(fetcher, producer, TOPICS, LIMIT, limiter).handle(
            input_record(default_codec(), TOPICS, job)
        )
    assert (limiter.delay_s("example.com") > before) is slows_the_site
