"""Every job ends with one final status, whatever a website sends and whatever a producer
publishes, on the real stack (Kafka, worker, sinks, PostgreSQL, gateway); the next job to the
same site (same partition) still finishes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import headers as hdr
from schemas import site_key
from scrapifie.local.kafka import LocalKafka
from scrapifie.local.postgres import LocalPostgres
from tests.integration.conftest import S3Endpoint, Stack, running_stack
from tests.integration.helpers import wait_final
from tests.integration.targets import TargetSite

pytestmark = pytest.mark.integration


async def _publish(stack: Stack, url: str, docs: list[dict[str, Any]]) -> list[str]:
    """Publish JSON jobs for ``url``'s site straight to the http tier topic; their job ids."""
    async with AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap) as producer:
        for doc in docs:
            await producer.send_and_wait(
                stack.kafka.topics.tier("http"),
                json.dumps({"tenant": stack.tenant, **doc}).encode(),
                key=site_key(url).encode(),
            )
    return [d["job_id"] for d in docs]


async def _submit(stack: Stack, url: str, **job: Any) -> str:
    async with stack.client() as client:
        resp = await client.post("/v1/jobs", json={"url": url, "tier": "http", **job})
        assert resp.status_code == 202, resp.text
        return str(resp.json()["job_id"])


async def test_header_bytes_that_are_not_utf8_end_the_job(stack: Stack, target: TargetSite) -> None:
    legacy = await _submit(stack, f"{target.base}/legacy-header")
    nul = await _submit(stack, f"{target.base}/nul-header")
    after = await _submit(stack, f"{target.base}/page/11")
    rows = await wait_final(stack.dsn, [legacy, nul, after], timeout_s=60)
    assert rows[legacy]["status"] == "succeeded"  # the byte is read as Latin-1
    assert rows[nul]["status"] in ("succeeded", "failed")
    assert rows[after]["status"] == "succeeded"


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"max_body_bytes": 2**62}, "max_body_bytes must be at most"),
        ({"wait_for": "#app\u0000"}, "control characters"),
        ({"headers": {"Content-Length": "0"}}, "may not be set by a job"),
        ({"headers": {"Transfer-Encoding": "chunked"}}, "may not be set by a job"),
        ({"headers": {"X:Y": "1"}}, "not a valid header name"),
        ({"headers": {"X-A": "1\r\nContent-Length: 0"}}, "control characters"),
        ({"timeout_s": -1}, "timeout_s"),
        ({"wait_until": "never"}, "wait_until"),
    ],
)
async def test_options_published_straight_to_kafka_are_checked(
    stack: Stack, target: TargetSite, options: dict[str, Any], says: str
) -> None:
    url = f"{target.base}/page/12"
    bad, good = str(uuid.uuid4()), str(uuid.uuid4())
    await _publish(
        stack,
        url,
        [{"job_id": bad, "url": url, "options": options}, {"job_id": good, "url": url}],
    )
    rows = await wait_final(stack.dsn, [bad, good], timeout_s=60)
    assert rows[bad]["status"] == "failed"
    assert rows[bad]["error_code"] == "invalid_request"
    assert says in rows[bad]["error_message"]
    assert rows[good]["status"] == "succeeded"


async def test_a_nul_in_the_url_fails_the_job_and_its_row_is_written(
    stack: Stack, target: TargetSite
) -> None:
    url = f"{target.base}/page/13"
    bad, good = str(uuid.uuid4()), str(uuid.uuid4())
    await _publish(
        stack, url, [{"job_id": bad, "url": url + "\u0000x"}, {"job_id": good, "url": url}]
    )
    rows = await wait_final(stack.dsn, [bad, good], timeout_s=60)
    assert rows[bad]["status"] == "failed" and rows[bad]["error_code"] == "invalid_url"
    assert "\x00" not in rows[bad]["url"]
    assert rows[good]["status"] == "succeeded"


async def test_a_job_id_that_is_no_uuid_goes_to_the_dlq_and_work_goes_on(
    stack: Stack, target: TargetSite
) -> None:
    url = f"{target.base}/page/14"
    good = str(uuid.uuid4())
    marker = uuid.uuid4().hex
    await _publish(
        stack,
        url,
        [{"job_id": "..", "url": f"{url}?{marker}"}, {"job_id": good, "url": url}],
    )
    rows = await wait_final(stack.dsn, [good], timeout_s=60)
    assert rows[good]["status"] == "succeeded"
    found = await _dlq_records(stack, marker.encode())
    assert [hdr.get(m.headers, hdr.DLQ_REASON) for m in found] == ["invalid_job_id"]


async def _dlq_records(stack: Stack, needle: bytes) -> list[Any]:
    consumer = AIOKafkaConsumer(
        stack.kafka.topics.dlq,
        bootstrap_servers=stack.kafka.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        for _ in range(20):
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                found += [m for m in msgs if needle in (m.value or b"")]
            if found:
                break
    finally:
        await consumer.stop()
    return found


# -- a result larger than Kafka takes ------------------------------------------------------------

MAX_MESSAGE = 1024 * 1024


@pytest.fixture(scope="module")
def small_records_stack(
    kafka: LocalKafka,
    postgres: LocalPostgres,
    s3: S3Endpoint,
    target: TargetSite,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A stack whose records may carry at most 1 MiB (the topics take 16): a page that does
    not shrink below it under gzip cannot travel in a result."""
    limits = {"127.0.0.1": {"rate_per_s": 100000, "concurrency": 64}}
    env = {
        "SCRAPIFIE_KAFKA__MAX_MESSAGE_BYTES": str(MAX_MESSAGE),
        "SCRAPIFIE_WORKER__SITE_LIMITS": json.dumps(limits),
    }
    site = target.base.removeprefix("http://")
    tmp: Path = tmp_path_factory.mktemp("small-records")
    with running_stack(kafka, postgres, s3, tmp, [site], env) as st:
        yield st


async def test_a_result_larger_than_a_kafka_record_fails_too_large(
    small_records_stack: Stack, target: TargetSite
) -> None:
    stack = small_records_stack
    big = await _submit(
        stack,
        f"{target.base}/random/{2 * MAX_MESSAGE}",
        options={"max_body_bytes": 4 * MAX_MESSAGE},
    )
    after = await _submit(stack, f"{target.base}/page/15")
    rows = await wait_final(stack.dsn, [big, after], timeout_s=60)
    assert rows[big]["status"] == "failed" and rows[big]["error_code"] == "too_large"
    assert "max_body_bytes" in rows[big]["error_message"]
    assert rows[after]["status"] == "succeeded"


@pytest.mark.parametrize("url", ["http://[::1", "http://[not-an-ip]/x", "not a url at all"])
async def test_an_auto_job_the_router_cannot_key_still_ends(stack: Stack, url: str) -> None:
    job_id = str(uuid.uuid4())
    async with AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap) as producer:
        await producer.send_and_wait(
            stack.kafka.topics.requests,
            json.dumps(
                {"job_id": job_id, "tenant": stack.tenant, "url": url, "tier": "auto"}
            ).encode(),
            key=b"?",
        )
    rows = await wait_final(stack.dsn, [job_id], timeout_s=60)
    assert rows[job_id]["status"] == "failed" and rows[job_id]["error_code"] == "invalid_url"
