"""Limits and credits that hold, through the real stack: 402 when a tenant cannot pay, 429 on
rate and on jobs in flight, no balance below zero under parallel submits from two gateway
processes, every job charged once when it ends, and a replay of the whole metering topic
moving no balance."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from scrapifie.admin import add_tenant
from scrapifie.local.ports import free_port
from tests.integration.conftest import Stack
from tests.integration.helpers import wait_final
from tests.integration.targets import TargetSite

pytestmark = pytest.mark.integration


async def _tenant(stack: Stack, credits: int, **settings: Any) -> tuple[str, str]:
    name = f"acct-{uuid.uuid4().hex[:8]}"
    key = await add_tenant(stack.dsn, name, credits)
    if settings:
        sets = ", ".join(f"{k} = %s" for k in settings)
        async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
            await conn.execute(
                f"UPDATE tenants SET {sets} WHERE tenant_id = %s", (*settings.values(), name)
            )
    return name, key


def _client(base: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30, trust_env=False
    )


async def _balance(stack: Stack, tenant: str) -> tuple[int, int, int]:
    async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT credits, reserved, open_jobs FROM tenants WHERE tenant_id = %s", (tenant,)
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def test_a_tenant_without_credits_gets_402_and_nothing_is_queued(
    stack: Stack, target: TargetSite
) -> None:
    tenant, key = await _tenant(stack, 0)
    async with _client(stack.gateway, key) as client:
        resp = await client.post("/v1/jobs", json={"url": f"{target.base}/page/1"})
        assert resp.status_code == 402, resp.text
        assert resp.json()["error"]["code"] == "insufficient_credits"
        batch = await client.post(
            "/v1/jobs/batch", json={"jobs": [{"url": f"{target.base}/page/2"}]}
        )
        assert batch.status_code == 402
    assert await _balance(stack, tenant) == (0, 0, 0)


async def test_parallel_submits_from_two_gateways_never_spend_more_than_the_balance(
    stack: Stack, target: TargetSite
) -> None:
    tenant, key = await _tenant(stack, 10)
    port = free_port()
    stack.start("gateway-2", "gateway", env={"SCRAPIFIE_GATEWAY__PORT": str(port)})
    other = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(stack.wait_for, f"{other}/readyz", 60)
        async with _client(stack.gateway, key) as one, _client(other, key) as two:
            clients = [one, two]
            answers = await asyncio.gather(
                *(
                    clients[i % 2].post(
                        "/v1/jobs", json={"url": f"{target.base}/page/{i}", "tier": "http"}
                    )
                    for i in range(40)
                )
            )
    finally:
        stack.stop("gateway-2")
    codes = sorted(r.status_code for r in answers)
    others = {r.text for r in answers if r.status_code not in (202, 402)}
    assert codes.count(202) == 10 and codes.count(402) == 30, (codes, others)
    accepted = [r.json()["job_id"] for r in answers if r.status_code == 202]
    await wait_final(stack.dsn, accepted, timeout_s=60)
    for _ in range(50):  # the results sink settles each job as it writes its row
        credits, reserved, open_jobs = await _balance(stack, tenant)
        if open_jobs == 0:
            break
        await asyncio.sleep(0.2)
    assert (credits, reserved, open_jobs) == (0, 0, 0)
    async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT sum(delta), count(*) FILTER (WHERE reason = 'charge') FROM credit_ledger"
            " WHERE tenant_id = %s",
            (tenant,),
        )
        assert await cur.fetchone() == (0, 10)  # the grant of 10, then ten charges of 1


async def test_rate_and_jobs_in_flight_answer_429(stack: Stack, target: TargetSite) -> None:
    _, key = await _tenant(stack, 100, rate_per_s=1.0)
    async with _client(stack.gateway, key) as client:
        codes = [
            (await client.post("/v1/jobs", json={"url": f"{target.base}/page/{i}"})).status_code
            for i in range(3)
        ]
        limited = await client.post("/v1/jobs", json={"url": f"{target.base}/page/9"})
    assert codes[0] == 202 and 429 in codes, codes
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1

    _, key = await _tenant(stack, 100, max_jobs=2)
    async with _client(stack.gateway, key) as client:
        slow = [f"{target.base}/hang/{uuid.uuid4()}" for _ in range(3)]
        first = [
            await client.post("/v1/jobs", json={"url": u, "options": {"timeout_s": 20}})
            for u in slow[:2]
        ]
        third = await client.post("/v1/jobs", json={"url": slow[2]})
    assert [r.status_code for r in first] == [202, 202]
    assert third.status_code == 429 and third.json()["error"]["code"] == "too_many_jobs"


async def test_the_charge_is_shown_and_a_metering_replay_moves_no_balance(
    stack: Stack, target: TargetSite
) -> None:
    tenant, key = await _tenant(stack, 50)
    async with _client(stack.gateway, key) as client:
        resp = await client.post(
            "/v1/jobs", params={"wait": 60}, json={"url": f"{target.base}/page/3"}
        )
        assert resp.status_code == 200 and resp.headers["X-Credits-Charged"] == "1"
    for _ in range(50):
        if (await _balance(stack, tenant))[2] == 0:
            break
        await asyncio.sleep(0.2)
    before = await _balance(stack, tenant)
    assert before == (49, 0, 0)

    # Replay every metering event on the topic (what a consumer-offset reset would do).
    consumer = AIOKafkaConsumer(
        stack.kafka.topics.metering,
        bootstrap_servers=stack.kafka.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap)
    await consumer.start()
    await producer.start()
    replayed = 0
    try:
        # Up to the end as it is now: what we send back lands after it.
        parts = consumer.assignment() or set()
        while not parts:
            await asyncio.sleep(0.1)
            parts = consumer.assignment()
        end = await consumer.end_offsets(list(parts))
        pending = {tp for tp in parts if end[tp] > 0}
        while pending:
            for tp, msgs in (await consumer.getmany(timeout_ms=1000)).items():
                for m in msgs:
                    if m.offset < end[tp]:
                        await producer.send(stack.kafka.topics.metering, m.value, key=m.key)
                        replayed += 1
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()
    assert replayed > 0
    await asyncio.sleep(3)  # the ledger sink reads them all again
    assert await _balance(stack, tenant) == before


async def test_jobs_published_to_kafka_for_an_unknown_or_disabled_tenant_end_unrun(
    stack: Stack, target: TargetSite
) -> None:
    disabled, _ = await _tenant(stack, 100, enabled=False)
    url = f"{target.base}/counted/{uuid.uuid4()}"
    jobs = {str(uuid.uuid4()): f"nobody-{uuid.uuid4().hex[:6]}", str(uuid.uuid4()): disabled}
    async with AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap) as producer:
        for job_id, tenant in jobs.items():
            doc = {"job_id": job_id, "tenant": tenant, "url": url}
            await producer.send_and_wait(
                stack.kafka.topics.tier("http"), json.dumps(doc).encode(), key=b"127.0.0.1"
            )
    rows = await wait_final(stack.dsn, list(jobs), timeout_s=60)
    codes = {rows[j]["tenant_id"]: (rows[j]["status"], rows[j]["error_code"]) for j in jobs}
    assert codes[disabled] == ("failed", "tenant_disabled")
    assert [v for k, v in codes.items() if k != disabled] == [("failed", "unknown_tenant")]
    assert all(rows[j]["credits"] == 0 for j in jobs)
    assert target.hits.get(url.removeprefix(target.base), 0) == 0  # never fetched
