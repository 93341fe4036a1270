"""EventProducer against the real broker: when the broker rejects the idempotent producer's
state (what a broker restart can do, aiokafka#1017), every concurrent sender gets its records
out on a fresh producer, and none gives up.

A sender that gives up leaves its input offset unacknowledged for the life of the worker, so
the job stays unfinished until a restart (the Kafka-outage fault test caught one in CI).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import OutOfOrderSequenceNumber

from schemas.kafka import EventProducer, KafkaConfig
from scrapifie.local.kafka import LocalKafka

pytestmark = pytest.mark.integration

SENDERS = 24
ROUNDS = 5


async def _topic(bootstrap: str) -> str:
    name = f"scrapifie.test.producer-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=name, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    return name


async def _read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    seen: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            while len(set(seen)) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                seen += [m.value for msgs in batch.values() for m in msgs if m.value]
    finally:
        await consumer.stop()
    return seen


async def _senders_survive_rejected_state(bootstrap: str) -> None:
    topic = await _topic(bootstrap)
    cfg = KafkaConfig(bootstrap=bootstrap)
    async with EventProducer(cfg, "test") as producer:
        first = producer._producer

        async def sender(n: int) -> None:
            for r in range(ROUNDS):
                value = f"{n}-{r}".encode()
                await producer.send_many(
                    [(topic, value, value, []), (topic, value + b"+", value + b"+", [])]
                )

        tasks = [asyncio.create_task(sender(n)) for n in range(SENDERS)]
        await asyncio.sleep(0)  # every sender has records in the accumulator now
        # What aiokafka's sender does when the broker answers OUT_OF_ORDER_SEQUENCE_NUMBER:
        # every pending batch fails, and every later send raises the same error.
        first._message_accumulator.fail_all(OutOfOrderSequenceNumber())
        results = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert failed == [], failed
        assert producer._producer is not first
    values = await _read_all(bootstrap, topic, SENDERS * ROUNDS * 2)
    assert len(set(values)) == SENDERS * ROUNDS * 2


def test_concurrent_senders_survive_a_rejected_producer_state(kafka: LocalKafka) -> None:
    asyncio.run(_senders_survive_rejected_state(kafka.bootstrap))
