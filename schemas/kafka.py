"""Kafka client settings every producer and consumer of our topics must share.

Kept beside the topic declarations because they are part of the same contract: message size
limits match the topics' ``max.message.bytes`` and producers are idempotent with ``acks=all``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

from aiokafka.errors import (
    InvalidProducerIdMapping,
    KafkaConnectionError,
    KafkaTimeoutError,
    OutOfOrderSequenceNumber,
    RequestTimedOutError,
    UnknownProducerId,
)
from aiokafka.partitioner import murmur2
from pydantic import BaseModel, ConfigDict, Field

from schemas import headers as hdr
from schemas.backoff import Backoff
from schemas.topics import MAX_MESSAGE_BYTES, TopicSet

log = logging.getLogger(__name__)
_RETRY_ALWAYS = (KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError)
_RESET_PRODUCER = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerIdMapping)


class KafkaConfig(BaseModel):
    """Where the brokers are and how our topics are named."""

    model_config = ConfigDict(frozen=True)

    bootstrap: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    topic_prefix: str = Field("", description="Prefix for every topic name (isolates deployments).")
    client_id: str = Field("scrapifie", description="Client id prefix seen by the brokers.")
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, description="Largest record we produce.")

    @property
    def topics(self) -> TopicSet:
        return TopicSet(self.topic_prefix)


# Per-partition batch limit of our producers: many results fit in one round trip to the broker.
PRODUCER_BATCH_BYTES: Final = 1024 * 1024


@functools.lru_cache(maxsize=8192)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_for(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """Kafka's default partitioning (murmur2 of the key, as the Java client and aiokafka do), with
    recent keys' hashes remembered: aiokafka's murmur2 is pure Python (~8 us a 36-byte key), a job's
    metering, result and hand-over records share its key, and site keys repeat."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[_key_hash(key) % len(all_partitions)]


def producer_kwargs(cfg: KafkaConfig, role: str) -> dict[str, Any]:
    """aiokafka.AIOKafkaProducer arguments: idempotent, acks=all, sized for results."""
    return {
        "bootstrap_servers": cfg.bootstrap,
        "client_id": f"{cfg.client_id}-{role}",
        "enable_idempotence": True,
        "acks": "all",
        "max_request_size": cfg.max_message_bytes + 64 * 1024,
        "linger_ms": 1,  # batching still happens under load; 5 ms cost p50 latency
        # aiokafka sends one request at a time per broker and takes one batch per partition into
        # it; send() waits while its partition's batch is full. At the default 16 KiB a batch
        # holds one stored page, so a worker could emit one result per partition per round trip.
        "max_batch_size": PRODUCER_BATCH_BYTES,
        "partitioner": partition_for,
        "request_timeout_ms": 30_000,
        "retry_backoff_ms": 200,
    }


def consumer_kwargs(
    cfg: KafkaConfig, group: str, role: str, instance_id: str | None = None
) -> dict[str, Any]:
    """aiokafka.AIOKafkaConsumer arguments: manual commits, reads from the start.
    ``instance_id``: static membership (KIP-345), see ``SinkConfig.instance_id``."""
    return {
        "bootstrap_servers": cfg.bootstrap,
        "client_id": f"{cfg.client_id}-{role}",
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": cfg.max_message_bytes + 64 * 1024,
        "fetch_max_bytes": max(52_428_800, cfg.max_message_bytes * 2),
        # Sinks keep retrying a failed write without polling; stay in the group meanwhile.
        "max_poll_interval_ms": 15 * 60 * 1000,
        "session_timeout_ms": 20_000,
        "heartbeat_interval_ms": 3_000,
        "group_instance_id": instance_id,
    }


class SourceRecord(Protocol):
    """A consumed record, whatever the consumer library (aiokafka, Faust, our InputRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...


class EventProducer:
    """An idempotent aiokafka producer that keeps trying until Kafka acknowledges the record.

    ``send`` returns only once the record is durable on the broker (acks=all), so callers may
    commit their input offset afterwards. While the brokers are unreachable it retries with
    capped backoff instead of failing: the caller's offset stays uncommitted meanwhile.
    Async context manager: ``async with EventProducer(cfg, "worker") as p``.
    """

    def __init__(self, cfg: KafkaConfig, role: str, *, max_backoff_s: float = 5.0) -> None:
        from aiokafka import AIOKafkaProducer

        self._kwargs = producer_kwargs(cfg, role)
        self._producer = AIOKafkaProducer(**self._kwargs)
        # Resolved when ``_producer`` is replaced: senders still waiting on its futures (which a
        # stopped aiokafka producer may never resolve) send again on the successor.
        self._retired: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lock = asyncio.Lock()
        self._max_backoff_s = max_backoff_s
        self._closing = False

    async def __aenter__(self) -> EventProducer:
        await self._start(self._producer)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        await self._producer.stop()

    async def _start(self, producer: Any) -> None:
        from aiokafka.errors import KafkaError

        backoff = Backoff(0.2, self._max_backoff_s)
        while True:
            try:
                await producer.start()
                return
            except KafkaError as exc:
                log.warning(
                    "kafka producer cannot start (%s); retrying in %.1fs", exc, backoff.delay_s
                )
                await backoff.sleep()

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        await self.send_many([(topic, key, value, headers or [])])

    async def send_many(
        self, records: Sequence[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]
    ) -> None:
        """Send records and wait until all are acknowledged (order kept per topic/key).

        Gives up only on errors that sending again cannot fix (a record too large, say) or
        when the producer is being closed; everything else is retried with capped backoff.
        """
        from aiokafka.errors import KafkaError, ProducerClosed

        backoff = Backoff(0.2, self._max_backoff_s)
        while True:
            producer, retired = self._producer, self._retired
            try:
                futures = [
                    await producer.send(t, value=v, key=k, headers=h) for t, k, v, h in records
                ]
                if await _acknowledged(futures, retired):
                    return
                # Replaced while we waited: its futures may never resolve, so send again.
                continue
            except _RESET_PRODUCER as exc:
                # After a broker restart the idempotent producer's sequence state can be
                # rejected for good (aiokafka#1017): start a fresh producer (new producer id)
                # and send again. Consumers are idempotent, so a resend duplicates nothing.
                log.warning("kafka producer state rejected (%s); restarting the producer", exc)
                await self._replace(producer, backoff.next())
            except ProducerClosed:
                if self._closing:
                    raise
                # Another sender is replacing it: wait for the successor and send again.
                await self._replace(producer, backoff.next())
            except KafkaError as exc:
                if not getattr(exc, "retriable", False) and not isinstance(exc, _RETRY_ALWAYS):
                    raise
                log.warning("kafka send failed (%s); retrying in %.1fs", exc, backoff.delay_s)
                await backoff.sleep()

    async def dead_letter(
        self,
        dlq_topic: str,
        source: SourceRecord,
        reason: str,
        detail: str,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        """The one way a record goes to the DLQ: its original bytes, key and headers, plus where
        it was read (topic, partition, offset) and why it could not be used (``reason``, a short
        stable code, and ``detail``). ``headers`` replaces ``source.headers`` when the consumer
        library keeps them in another shape."""
        original = list(headers if headers is not None else source.headers or ())
        await self.send(
            dlq_topic,
            source.value or b"",
            key=source.key,
            headers=hdr.dlq(
                original, reason, detail, source.topic, source.partition, source.offset
            ),
        )

    async def _replace(self, failed: Any, delay: float) -> None:
        """Replace ``failed`` by a started fresh producer, once however many senders saw it
        fail; a sender that comes late finds it replaced already and just sends again."""
        from aiokafka import AIOKafkaProducer

        async with self._lock:
            if self._producer is not failed or self._closing:
                return
            try:
                async with asyncio.timeout(self._kwargs["request_timeout_ms"] / 1000):
                    await failed.stop()
            except Exception as exc:  # the old one is being discarded either way
                log.info("stopping the discarded producer: %s", exc)
            await asyncio.sleep(delay)
            fresh = AIOKafkaProducer(**self._kwargs)
            await self._start(fresh)
            retired, self._retired = self._retired, asyncio.get_running_loop().create_future()
            self._producer = fresh
            retired.set_result(None)

    async def leaders_reachable(self, topics: Iterable[str], timeout_s: float = 2.0) -> bool:
        """Whether the broker leading every partition of ``topics`` answers a connection now.

        Records handed to the producer cannot be taken back: while a leader is away they wait
        in its buffer and are delivered when it returns. A caller that must be able to say
        "not accepted" (the gateway's 503) asks this first and keeps records out meanwhile.
        """
        from aiokafka.errors import KafkaError
        from aiokafka.structs import TopicPartition

        producer = self._producer
        client = producer.client

        async def check() -> bool:
            leaders: set[int] = set()
            for topic in set(topics):
                for p in await producer.partitions_for(topic):
                    leader = client.cluster.leader_for_partition(TopicPartition(topic, p))
                    if leader is None or leader == -1:
                        return False
                    leaders.add(leader)
            for node in leaders:
                if not await client.ready(node):
                    return False
            return True

        try:
            async with asyncio.timeout(timeout_s):
                if await check():
                    return True
                # Nothing is sent while we refuse, so nothing would refresh the metadata that
                # still names the leaders as they were during the outage: ask for it.
                await client.force_metadata_update()
                return await check()
        except (TimeoutError, KafkaError, OSError):
            return False

    async def flush(self) -> None:
        await self._producer.flush()


async def _acknowledged(futures: list[asyncio.Future[Any]], retired: asyncio.Future[None]) -> bool:
    """Wait for every future: True once all are acknowledged (the first error is raised),
    False if ``retired`` resolves first.

    One callback per future and one waiter, instead of ``gather`` + ``wait`` (which wrap,
    schedule and unwind several futures and sets per call): this runs for every job."""
    if not futures:
        return True
    waiter = asyncio.get_running_loop().create_future()
    left = len(futures)

    def _one_done(_: asyncio.Future[Any]) -> None:
        nonlocal left
        left -= 1
        if left == 0 and not waiter.done():
            waiter.set_result(True)

    def _retired(_: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_result(False)

    for fut in futures:
        fut.add_done_callback(_one_done)
    retired.add_done_callback(_retired)
    try:
        if not await waiter and not all(fut.done() for fut in futures):
            return False
    finally:
        retired.remove_done_callback(_retired)
        for fut in futures:
            fut.remove_done_callback(_one_done)
    for fut in futures:
        if fut.cancelled():
            raise asyncio.CancelledError
        exc = fut.exception()
        if exc is not None:
            raise exc
    return True
