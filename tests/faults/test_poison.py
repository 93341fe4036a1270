"""Poison records on the input topics (scenario 6).

"Exactly one DLQ record each" is read as: a record that cannot be decoded (bad magic bytes,
unknown fingerprint, truncated Avro, invalid JSON, JSON that is not a ScrapeRequest) goes to
the DLQ once, with its reason and its original bytes, key, headers, topic, partition and offset.
A record that decodes but asks for an invalid URL is a job like any other: it ends ``failed``
with ``invalid_url`` (the user-visible error) and nothing goes to the DLQ. Either way the
partition keeps flowing: the consumer's committed offset moves past the poison and the jobs
published after it on the same partition finish.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas import ErrorCode, Tier, default_codec
from schemas import headers as hdr
from schemas.records import AUTO, AttemptOutcome, JobStatus, Metering, ScrapeRequest, ScrapeResult
from tests.faults.conftest import StackFactory
from tests.faults.helpers import poll_final, rows_for_tenant, settled_verify, submit, summary
from tests.faults.infra import FaultStack, SlowSite

pytestmark = pytest.mark.faults

SITE_KEY = b"127.0.0.1"  # the partition the good jobs use on the request topics


@dataclass
class Poison:
    name: str
    topic: str
    value: bytes
    reason: str | None  # expected dlq.reason; None: not a poison for the DLQ (a failed job)
    key: bytes | None = None
    partition: int = -1
    offset: int = -1
    job_id: str | None = None
    code: str = "invalid_url"  # the error code a decodable poison's job ends with


def _request(tenant: str, url: str) -> ScrapeRequest:
    return ScrapeRequest(
        job_id=str(uuid.uuid4()), tenant=tenant, url=url, tier=AUTO, created_at=datetime.now(UTC)
    )


def _json_request(tenant: str, url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A request as a JSON producer writes it (no created_at: the reader fills it in)."""
    return {
        "job_id": str(uuid.uuid4()),
        "tenant": tenant,
        "url": url,
        "tier": AUTO,
        "options": options or {},
    }


def _result(tenant: str) -> ScrapeResult:
    now = datetime.now(UTC)
    return ScrapeResult(
        event_id=str(uuid.uuid4()),
        job_id=str(uuid.uuid4()),
        tenant=tenant,
        url="http://127.0.0.1/x",
        tier=Tier.HTTP,
        attempts=1,
        status=JobStatus.FAILED,
        error_code=ErrorCode.INTERNAL,
        created_at=now,
        finished_at=now,
    )


def _metering(tenant: str) -> Metering:
    return Metering(
        event_id=str(uuid.uuid4()),
        job_id=str(uuid.uuid4()),
        tenant=tenant,
        tier=Tier.HTTP,
        attempt=1,
        outcome=AttemptOutcome.OK,
        credits=1,
        created_at=datetime.now(UTC),
    )


def _undecodable(topic: str, good: bytes, key: bytes | None = None) -> list[Poison]:
    """The four kinds of bytes no reader can decode, for one topic. Only request topics accept
    JSON; to the Avro-only topics a JSON text is a value without the Avro marker."""
    json_reason = "invalid_json" if key == SITE_KEY else "bad_magic"
    return [
        Poison("bad magic", topic, b"\x00\x01garbage that is not avro", "bad_magic", key),
        Poison(
            "unknown fingerprint",
            topic,
            b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + good[10:],
            "unknown_fingerprint",
            key,
        ),
        Poison("truncated avro", topic, good[: len(good) // 2], "truncated", key),
        Poison("invalid json", topic, b'{"job_id": "x", "url": ', json_reason, key),
    ]


async def _produce(stack: FaultStack, poisons: list[Poison]) -> None:
    async with AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap) as producer:
        for i, p in enumerate(poisons):
            parts = sorted(await producer.partitions_for(p.topic))
            partition = None if p.key is not None else parts[i % len(parts)]
            meta = await producer.send_and_wait(
                p.topic,
                p.value,
                key=p.key,
                partition=partition,
                headers=[("poison-id", f"{i}".encode()), ("origin", b"faults")],
            )
            p.partition, p.offset = meta.partition, meta.offset


async def _read_dlq(stack: FaultStack) -> dict[tuple[str, int, int], list[Any]]:
    """Every DLQ record, by the (topic, partition, offset) it came from."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    found: dict[tuple[str, int, int], list[Any]] = {}
    try:
        tps = [TopicPartition(stack.kafka.topics.dlq, p) for p in range(3)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while True:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            for msgs in (await consumer.getmany(timeout_ms=1000)).values():
                for m in msgs:
                    origin = (
                        hdr.get(m.headers, hdr.DLQ_TOPIC) or "?",
                        int(hdr.get(m.headers, hdr.DLQ_PARTITION) or -1),
                        int(hdr.get(m.headers, hdr.DLQ_OFFSET) or -1),
                    )
                    found.setdefault(origin, []).append(m)
    finally:
        await consumer.stop()
    return found


async def _committed_past(stack: FaultStack, poisons: list[Poison], timeout_s: float = 30) -> bool:
    """Whether each poisoned partition's consumer group committed past its poison."""
    prefix = stack.kafka.topic_prefix
    topics = stack.kafka.topics
    group_of = {
        topics.requests: f"scrapifie-{prefix}router",
        topics.tier("http"): f"scrapifie-{prefix}http",
        topics.results: f"scrapifie-{prefix}sink-results",
        topics.metering: f"scrapifie-{prefix}sink-ledger",
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            behind = []
            for p in poisons:
                offsets = await admin.list_consumer_group_offsets(group_of[p.topic])
                committed = offsets.get(TopicPartition(p.topic, p.partition))
                if committed is None or committed.offset <= p.offset:
                    behind.append(p.name)
            if not behind or time.monotonic() > deadline:
                return not behind
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def test_poison_records_on_every_input_topic(
    make_stack: StackFactory, slow_site: SlowSite, record: Callable[..., None]
) -> None:
    """Scenario 6: poison on scrape.requests (router), scrape.http (worker), scrape.results
    (results sink) and scrape.metering (ledger sink), then 100 good jobs."""
    stack = await make_stack()
    codec = default_codec()
    topics = stack.kafka.topics
    good_request = codec.write(_request(stack.tenant, f"{slow_site.base}/x"))
    poisons: list[Poison] = []
    for topic in (topics.requests, topics.tier("http")):
        poisons += _undecodable(topic, good_request, SITE_KEY)
        poisons.append(
            Poison("not a ScrapeRequest", topic, b'{"job_id": 7}', "invalid_record", SITE_KEY)
        )
        for url in ("ftp://example.com/f", "http://exa mple.com/", "not a url", ""):
            job = _request(stack.tenant, url)
            poisons.append(
                Poison(
                    f"invalid url {url!r}",
                    topic,
                    codec.write(job),
                    None,
                    SITE_KEY,
                    job_id=job.job_id,
                )
            )
        doc = _json_request(stack.tenant, "javascript:alert(1)")
        poisons.append(
            Poison(
                "invalid url as JSON",
                topic,
                json.dumps(doc).encode(),
                None,
                SITE_KEY,
                job_id=doc["job_id"],
            )
        )
        # A job id that is no UUID has no job to end (it names rows and objects): the DLQ.
        bad_id = {"job_id": "..", "tenant": stack.tenant, "url": f"{slow_site.base}/x"}
        poisons.append(
            Poison("job id '..'", topic, json.dumps(bad_id).encode(), "invalid_job_id", SITE_KEY)
        )
        # Options a producer may not send: the job ends failed, saying which and why.
        for name, options in (
            ("NUL in wait_for", {"wait_for": "#app\u0000"}),
            ("framing header", {"headers": {"Transfer-Encoding": "chunked"}}),
            ("huge max_body_bytes", {"max_body_bytes": 2**62}),
        ):
            doc = _json_request(stack.tenant, f"{slow_site.base}/x", options)
            poisons.append(
                Poison(
                    name,
                    topic,
                    json.dumps(doc).encode(),
                    None,
                    SITE_KEY,
                    job_id=doc["job_id"],
                    code="invalid_request",
                )
            )
    poisons += _undecodable(topics.results, codec.write(_result(stack.tenant)))
    poisons += _undecodable(topics.metering, codec.write(_metering(stack.tenant)))
    await _produce(stack, poisons)

    n = 100
    sub = await submit(stack, [f"{slow_site.base}/page/{i}" for i in range(n)])
    invalid_url_jobs = [p.job_id for p in poisons if p.job_id]
    flowing = await poll_final(stack.dsn, sub.ids + invalid_url_jobs, timeout_s=90)
    committed_past = await _committed_past(stack, poisons)
    dlq = await _read_dlq(stack)
    code, report, _ = await settled_verify(stack)
    rows = await rows_for_tenant(stack.dsn, stack.tenant)

    dead = [p for p in poisons if p.reason]
    copies = {
        p.name + " @" + p.topic: len(dlq.get((p.topic, p.partition, p.offset), [])) for p in poisons
    }
    record(
        "6 poison records",
        **summary(report),
        poison_records=len(dead),
        invalid_url_records=len(invalid_url_jobs),
        dlq_records_for_poison=sum(copies[p.name + " @" + p.topic] for p in dead),
        dlq_records_for_invalid_urls=sum(
            copies[p.name + " @" + p.topic] for p in poisons if not p.reason
        ),
        partitions_flowed=committed_past,
        good_jobs_final=flowing is not None,
    )
    assert not sub.gave_up
    assert flowing is not None, "jobs published after the poison did not all finish"
    assert committed_past, "a consumer did not commit past its poison"
    for p in dead:
        got = dlq.get((p.topic, p.partition, p.offset), [])
        assert len(got) == 1, (p.name, p.topic, len(got))
        m = got[0]
        assert m.value == p.value and m.key == p.key, p.name
        assert hdr.get(m.headers, hdr.DLQ_REASON) == p.reason, (p.name, m.headers)
        assert hdr.get(m.headers, hdr.DLQ_DETAIL), p.name
        assert hdr.get(m.headers, "origin") == "faults", p.name  # original headers kept
        assert hdr.get(m.headers, "poison-id") is not None, p.name
    for p in poisons:
        if p.reason is None:
            assert copies[p.name + " @" + p.topic] == 0, p.name
            assert rows[p.job_id or ""] == {"status": "failed", "error_code": p.code}, p.name
    assert sum(len(v) for v in dlq.values()) == len(dead)  # nothing else went to the DLQ
    broken = {c["name"]: c["examples"] for c in report["checks"] if c["status"] != "ok"}
    assert code == 0 and not broken, broken
    f = report["figures"]
    assert f["dlq"]["undecodable_inputs"] == len(dead) == f["dlq"]["records"], f["dlq"]
    assert f["jobs"]["total"] == f["jobs"]["final"] == n + len(invalid_url_jobs), f["jobs"]
    codes = Counter(p.code for p in poisons if p.reason is None)
    assert f["jobs"]["error_codes"] == codes, f["jobs"]
    assert f["attempts"]["rows"] == f["metering"]["distinct_events"] == n + len(invalid_url_jobs)


async def test_poison_on_the_other_inputs(
    make_stack: StackFactory, slow_site: SlowSite, record: Callable[..., None]
) -> None:
    """The rest of the inputs: a record of the wrong type on scrape.results and
    scrape.metering (valid Avro, another schema), undecodable feedback on scrape.routing (the
    router's second input), and an undecodable record parked on a delay topic. Each should
    reach the DLQ once, from where it was published, and nothing should stall."""
    stack = await make_stack()
    codec = default_codec()
    topics = stack.kafka.topics
    poisons = [
        Poison(
            "Metering on results",
            topics.results,
            codec.write(_metering(stack.tenant)),
            "wrong_type",
        ),
        Poison(
            "ScrapeResult on metering",
            topics.metering,
            codec.write(_result(stack.tenant)),
            "wrong_type",
        ),
        Poison("bad magic on routing", topics.routing, b"\x00garbage", "bad_magic", SITE_KEY),
        Poison(
            "bad magic on a delay topic",
            topics.delay("http", 5),
            b"\x00garbage",
            "bad_magic",
            SITE_KEY,
        ),
    ]
    await _produce(stack, poisons)
    sub = await submit(stack, [f"{slow_site.base}/page/{i}" for i in range(20)])
    await asyncio.sleep(6)  # the delay topic holds its records 5 s
    flowing = await poll_final(stack.dsn, sub.ids, timeout_s=20)
    dlq = await _read_dlq(stack)
    outcome = {
        p.name: [
            hdr.get(m.headers, hdr.DLQ_REASON)
            for m in dlq.get((p.topic, p.partition, p.offset), [])
        ]
        for p in poisons
    }
    elsewhere = [
        (origin, [hdr.get(m.headers, hdr.DLQ_REASON) for m in ms])
        for origin, ms in dlq.items()
        if origin not in {(p.topic, p.partition, p.offset) for p in poisons}
    ]
    alive = stack.alive()
    record(
        "6b poison on the other inputs",
        dlq_reasons_by_poison=outcome,
        dlq_records_from_elsewhere=elsewhere,
        good_jobs_final=flowing is not None,
        processes_alive=alive,
    )
    assert outcome == {p.name: [p.reason] for p in poisons}, (outcome, elsewhere)
    assert flowing is not None and all(alive.values()), alive
