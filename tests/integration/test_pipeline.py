"""The walking pipeline end to end on the real stack (see conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import content_object_key, default_codec, site_key
from schemas import headers as hdr
from schemas.records import ScrapeRequest
from tests.integration.conftest import REPO, S3Endpoint, Stack
from tests.integration.helpers import wait_final
from tests.integration.targets import BIG_PAGE_BYTES, TargetSite, page

pytestmark = pytest.mark.integration


def _path(i: int) -> str:
    """Every tenth job fetches a big page (stored through the worker's off-loop compression)."""
    return f"/big/{i}" if i % 10 == 0 else f"/page/{i}"


def _body(i: int) -> bytes:
    return page(i, BIG_PAGE_BYTES) if i % 10 == 0 else page(i)


async def test_200_jobs_through_the_gateway(stack: Stack, target: TargetSite) -> None:
    n = 200
    sem = asyncio.Semaphore(32)
    async with stack.client() as client:

        async def submit(i: int) -> str:
            async with sem:
                resp = await client.post(
                    "/v1/jobs",
                    json={"url": f"{target.base}{_path(i)}"},
                    headers={"X-Request-ID": f"trace-{i}"},
                )
            assert resp.status_code == 202, resp.text
            body = resp.json()
            assert body["status"] == "queued" and body["trace_id"] == f"trace-{i}"
            return str(body["job_id"])

        job_ids = await asyncio.gather(*(submit(i) for i in range(n)))
    assert len(set(job_ids)) == n

    rows = await wait_final(stack.dsn, job_ids)
    async with await psycopg.AsyncConnection.connect(stack.dsn) as conn:
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT job_id) FROM jobs WHERE job_id = ANY(%s)", (job_ids,)
        )
        assert await cur.fetchone() == (n, n)
        cur = await conn.execute("SELECT count(*) FROM attempts WHERE job_id = ANY(%s)", (job_ids,))
        assert await cur.fetchone() == (n,)

    s3 = stack.s3.client()
    for i, job_id in enumerate(job_ids):
        row = rows[job_id]
        assert row["status"] == "succeeded", row
        assert row["http_status"] == 200 and row["tier"] == "http"
        assert row["trace_id"] == f"trace-{i}"
        expected = hashlib.sha256(_body(i)).hexdigest()
        assert row["content_sha256"] == expected
        assert row["content_key"] == content_object_key(stack.tenant, job_id)
        obj = s3.get_object(Bucket=stack.s3.bucket, Key=row["content_key"])["Body"].read()
        import gzip

        assert hashlib.sha256(gzip.decompress(obj)).hexdigest() == expected

    # A downstream consumer that imports only `schemas` reads every result from the topic.
    reader = Path(__file__).with_name("read_results.py")
    proc = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            str(reader),
            stack.kafka.bootstrap,
            stack.kafka.topic_prefix,
            "100000",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**stack.env, "PYTHONPATH": str(REPO)},
    )
    seen = {json.loads(line)["job_id"] for line in proc.stdout.splitlines()}
    assert set(job_ids) <= seen


async def test_gateway_wait_and_content(stack: Stack, target: TargetSite) -> None:
    async with stack.client() as client:
        resp = await client.post(
            "/v1/jobs", params={"wait": 20}, json={"url": f"{target.base}/redirect"}
        )
        assert resp.status_code == 200, resp.text
        job = resp.json()
        assert job["status"] == "succeeded"
        assert job["final_url"].endswith("/page/0")
        content = await client.get(f"/v1/jobs/{job['job_id']}/content")
        assert content.status_code == 200 and content.content == page(0)
        assert content.headers["content-type"].startswith("text/html")

        resp = await client.post(
            "/v1/jobs", params={"wait": 20}, json={"url": f"{target.base}/missing"}
        )
        job = resp.json()
        assert (job["status"], job["error_code"], job["http_status"]) == (
            "failed",
            "http_error",
            404,
        )


async def test_gateway_rejects_bad_input_clearly(stack: Stack) -> None:
    async with stack.client() as client:
        for body, code in [
            ({"url": "ftp://example.com/"}, "invalid_url"),
            ({"url": "http://exa mple.com/"}, "invalid_url"),
            ({"url": "http://user:pw@example.com/"}, "invalid_url"),
            ({}, "invalid_url"),
            ({"url": "http://example.com/", "tier": "quantum"}, "invalid_tier"),
            ({"url": "http://example.com/", "options": {"timeout_s": -1}}, "invalid_request"),
        ]:
            resp = await client.post("/v1/jobs", json=body)
            assert resp.status_code == 400, (body, resp.text)
            assert resp.json()["error"]["code"] == code
            assert resp.json()["error"]["message"]
        resp = await client.post("/v1/jobs", content=b"{not json")
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
        resp = await client.post("/v1/jobs", content=b"{" + b" " * (2 * 1024 * 1024) + b"}")
        assert resp.status_code == 413
        resp = await client.get(f"/v1/jobs/{uuid.uuid4()}")
        assert resp.status_code == 404
        resp = await client.post(
            "/v1/jobs",
            json={"url": "http://example.com/"},
            headers={"Authorization": "Bearer wrong"},
        )
        assert resp.status_code == 401
        resp = await client.get("/openapi.json")
        assert resp.status_code == 200 and "/v1/jobs" in resp.json()["paths"]
        metrics = await client.get("/metrics")
        assert "scrapifie_gateway_requests_total" in metrics.text


async def test_json_job_published_straight_to_kafka(stack: Stack, target: TargetSite) -> None:
    job_id = str(uuid.uuid4())
    url = f"{target.base}/page/7"
    async with AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap) as producer:
        await producer.send_and_wait(
            stack.kafka.topics.tier("http"),
            json.dumps({"job_id": job_id, "tenant": stack.tenant, "url": url}).encode(),
            key=site_key(url).encode(),
        )
    rows = await wait_final(stack.dsn, [job_id], timeout_s=60)
    assert rows[job_id]["status"] == "succeeded"
    assert rows[job_id]["content_sha256"] == hashlib.sha256(page(7)).hexdigest()


async def test_malformed_record_goes_to_dlq_and_next_is_processed(
    stack: Stack, target: TargetSite
) -> None:
    topic = stack.kafka.topics.tier("http")
    url = f"{target.base}/page/3"
    key = site_key(url).encode()  # same partition as the good job that follows
    job_id = str(uuid.uuid4())
    good = default_codec().write(
        ScrapeRequest(
            job_id=job_id,
            tenant=stack.tenant,
            url=url,
            created_at=datetime.fromtimestamp(0, UTC),  # epoch 0: the worker takes it as now
        )
    )
    bad = b"\x00\x01garbage that is not avro"
    async with AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap) as producer:
        bad_meta = await producer.send_and_wait(topic, bad, key=key, headers=[("origin", b"test")])
        await producer.send_and_wait(topic, good, key=key)
    rows = await wait_final(stack.dsn, [job_id], timeout_s=60)
    assert rows[job_id]["status"] == "succeeded"

    consumer = AIOKafkaConsumer(
        stack.kafka.topics.dlq,
        bootstrap_servers=stack.kafka.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        found = []
        for _ in range(20):
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                found += [m for m in msgs if m.value == bad]
            if found:
                break
    finally:
        await consumer.stop()
    assert len(found) == 1
    headers = found[0].headers
    assert hdr.get(headers, hdr.DLQ_REASON) == "bad_magic"
    assert hdr.get(headers, hdr.DLQ_TOPIC) == topic
    assert hdr.get(headers, hdr.DLQ_OFFSET) == str(bad_meta.offset)
    assert hdr.get(headers, hdr.DLQ_PARTITION) == str(bad_meta.partition)
    assert hdr.get(headers, "origin") == "test"


async def test_s3_store_batch_writes_each_object_once(s3: S3Endpoint) -> None:
    from connectors.storage.s3 import S3ObjectStore

    store = S3ObjectStore(
        f"{s3.bucket}-batch",
        endpoint_url=s3.url,
        region="us-east-1",
        access_key_id=s3.key_id,
        secret_access_key=s3.secret,
        create_bucket=True,
    )
    items = [(f"content/t/{i:02d}/job-{i}.html.gz", f"body {i}".encode(), "x") for i in range(20)]
    assert await store.put_many_if_absent(items[:5]) == [True] * 5
    assert await store.put_many_if_absent(items) == [False] * 5 + [True] * 15
    assert await store.get("content/t/07/job-7.html.gz") == b"body 7"
