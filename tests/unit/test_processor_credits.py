"""What a job is charged, and the credits it may not exceed: a job pays once, in its last
attempt (the tier's price, the cache's, the robots price, or the failed price); a tier costing
more than options.max_credits or the credits reserved for the job is never tried."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from schemas import ErrorCode, TopicSet, default_codec
from schemas.records import Metering, ScrapeRequest, ScrapeResult
from streams.errors import TransientError
from streams.fetchers.base import FetchResponse
from tests.processor_harness import KafkaLike, Scripted, input_record, new_job_id, processor

pytestmark = pytest.mark.unit

TOPICS = TopicSet()
LIMIT = 16 * 1024 * 1024
PAGE = FetchResponse(
    url="http://example.com/",
    final_url="http://example.com/",
    status=200,
    headers={},
    body=b"<html><body><p>" + b"words " * 100 + b"</p></body></html>",
    content_type="text/html",
    wire_bytes=600,
)


def _job(**changes: object) -> ScrapeRequest:
    job = ScrapeRequest(
        job_id=new_job_id(), tenant="acme", url="http://example.com/", created_at=datetime.now(UTC)
    )
    options = changes.pop("options", None)
    if options:
        job.options = dataclasses.replace(job.options, **options)  # type: ignore[arg-type]
    return dataclasses.replace(job, **changes)  # type: ignore[arg-type]


async def _run(job: ScrapeRequest, fetcher: Scripted) -> tuple[list[object], KafkaLike]:
    producer = KafkaLike(LIMIT)
    await processor(fetcher, producer, TOPICS, LIMIT).handle(
        input_record(default_codec(), TOPICS, job)
    )
    codec = default_codec()
    return [codec.read_any(value) for _t, _k, value, _h in producer.sent], producer


async def test_a_page_costs_its_tier_price_once() -> None:
    records, _ = await _run(_job(), Scripted(response=PAGE))
    (metering,) = [r for r in records if isinstance(r, Metering)]
    (result,) = [r for r in records if isinstance(r, ScrapeResult)]
    assert (result.status, result.credits, metering.credits) == ("succeeded", 1, 1)


async def test_a_retried_attempt_costs_nothing() -> None:
    fetcher = Scripted(error=TransientError(ErrorCode.TIMEOUT, "slow"))
    records, _ = await _run(_job(), fetcher)
    (metering,) = [r for r in records if isinstance(r, Metering)]
    assert metering.credits == 0 and not [r for r in records if isinstance(r, ScrapeResult)]


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"options": {"max_credits": 0}}, "budget_exceeded"),
        ({"budget": 0}, "insufficient_credits"),
    ],
)
async def test_a_tier_costing_more_than_the_job_may_spend_is_never_tried(
    changes: dict[str, object], code: str
) -> None:
    fetcher = Scripted(response=PAGE)
    records, _ = await _run(_job(**changes), fetcher)
    (result,) = [r for r in records if isinstance(r, ScrapeResult)]
    assert (result.status, result.error_code, result.credits) == ("failed", code, 0)
    assert "costs 1 credits" in (result.error_message or "")
    assert not fetcher.requests


async def test_a_blocked_page_still_escalates_the_next_tier_checks_the_budget() -> None:
    # The http tier may run (price 1 ≤ 1) and escalates; the browser tier (5) will refuse it.
    fetcher = Scripted(response=dataclasses.replace(PAGE, status=403))
    records, producer = await _run(_job(options={"max_credits": 1}), fetcher)
    topics = [t for t, *_ in producer.sent]
    assert topics[:3] == [TOPICS.metering, TOPICS.escalations, TOPICS.tier("browser")], topics
    (metering,) = [r for r in records if isinstance(r, Metering)]
    assert metering.credits == 0
