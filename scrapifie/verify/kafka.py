"""Reading Kafka: the consumer groups' committed offsets, then every record of the verified
topics from the cutoff to their end offsets at that moment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from schemas import Codec, DecodeError, default_codec
from schemas import headers as hdr
from schemas.records import Metering, RouteFeedback, ScrapeResult
from scrapifie.settings import Settings
from scrapifie.verify.report import Progress
from scrapifie.verify.state import KafkaState, Meter, TopicScan, VerifyError, Where
from scrapifie.verify.topology import Topology

__all__ = ["read_kafka"]

_FETCH_MAX = 64 * 1024 * 1024


async def read_kafka(
    settings: Settings, topo: Topology, cutoff: datetime, progress: Progress
) -> KafkaState:
    """A snapshot of the deployment's topics and consumer groups for jobs since ``cutoff``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    codec = default_codec()
    kcfg = settings.kafka
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kcfg.bootstrap,
        client_id=f"{kcfg.client_id}-verify",
        request_timeout_ms=15_000,
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kcfg.bootstrap,
        client_id=f"{kcfg.client_id}-verify",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=kcfg.max_message_bytes + 64 * 1024,
        fetch_max_bytes=max(_FETCH_MAX, kcfg.max_message_bytes * 2),
        request_timeout_ms=30_000,
    )
    try:
        async with asyncio.timeout(30):
            await admin.start()
            await consumer.start()
    except (KafkaError, TimeoutError, OSError) as exc:
        await _quietly(admin.close())
        await _quietly(consumer.stop())
        raise VerifyError(f"Kafka unreachable at {kcfg.bootstrap}: {exc!r}") from exc
    try:
        # Order matters (see the package docstring): committed offsets, then end offsets.
        groups = {str(g[0]) for g in await admin.list_consumer_groups()}
        committed: dict[str, dict[tuple[str, int], int]] = {}
        for group in sorted(set(topo.consumer_of.values())):
            if group not in groups:
                continue
            offsets = await admin.list_consumer_group_offsets(group)
            committed[group] = {
                (tp.topic, tp.partition): int(om.offset) for tp, om in offsets.items()
            }
        existing = set(await admin.list_topics())
        scan_topics = [
            t
            for t in [
                *topo.request_topics,
                topo.results_topic,
                topo.metering_topic,
                topo.routing_topic,
                topo.dlq_topic,
            ]
            if t in existing
        ]
        missing = [t for t in (topo.results_topic, topo.metering_topic) if t not in existing]
        if missing:
            raise VerifyError(
                f"topics {missing} do not exist (wrong SCRAPIFIE_KAFKA__TOPIC_PREFIX?)"
            )
        described = await admin.describe_topics(scan_topics)
        tps = [
            TopicPartition(d["topic"], p["partition"])
            for d in described
            for p in sorted(d["partitions"], key=lambda p: int(p["partition"]))
        ]
        consumer.assign(tps)
        ends_raw = await consumer.end_offsets(tps)
        starts_raw = await consumer.offsets_for_times(
            {tp: int(cutoff.timestamp() * 1000) for tp in tps}
        )
        ends = {(tp.topic, tp.partition): int(off) for tp, off in ends_raw.items()}
        scan = TopicScan()
        todo: dict[Any, int] = {}
        for tp in tps:
            hit = starts_raw.get(tp)
            start = int(hit.offset) if hit is not None else ends_raw[tp]
            if start < ends_raw[tp]:
                consumer.seek(tp, start)
                todo[tp] = ends_raw[tp]
        total = sum(end - _start(starts_raw.get(tp), end) for tp, end in todo.items())
        progress.say(
            f"reading {total} records from {len(scan_topics)} topics (prefix {kcfg.topic_prefix!r})"
        )
        await _scan(consumer, todo, total, progress, lambda m: _take(m, scan, topo, codec, cutoff))
        return KafkaState(groups, committed, ends, scan)
    except KafkaError as exc:
        raise VerifyError(f"Kafka read failed: {exc!r}") from exc
    finally:
        await _quietly(consumer.stop())
        await _quietly(admin.close())


async def _scan(
    consumer: Any,
    todo: dict[Any, int],
    total: int,
    progress: Progress,
    take: Callable[[Any], None],
) -> None:
    read = 0
    idle_since = time.monotonic()
    while todo:
        batches = await consumer.getmany(*todo.keys(), timeout_ms=1000)
        if not batches:
            if time.monotonic() - idle_since > 60:
                raise VerifyError(f"no progress reading {sorted(map(str, todo))} for 60 s")
            continue
        idle_since = time.monotonic()
        for tp, msgs in batches.items():
            end = todo.get(tp)
            if end is None:
                continue
            for m in msgs:
                if m.offset >= end:
                    break
                take(m)
                read += 1
            if (msgs and msgs[-1].offset >= end - 1) or await consumer.position(tp) >= end:
                todo.pop(tp, None)
                consumer.pause(tp)
        progress.say(f"read {read} of {total} records", force=False)
    progress.say(f"read {read} records")


def _take(m: Any, scan: TopicScan, topo: Topology, codec: Codec, cutoff: datetime) -> None:
    where: Where = (m.topic, m.partition, m.offset)
    value: bytes = m.value or b""
    scan.records[m.topic] += 1
    if m.topic == topo.dlq_topic:
        headers = list(m.headers or ())
        origin = (
            hdr.get(headers, hdr.DLQ_TOPIC),
            hdr.get(headers, hdr.DLQ_PARTITION),
            hdr.get(headers, hdr.DLQ_OFFSET),
        )
        reason = hdr.get(headers, hdr.DLQ_REASON) or "?"
        try:
            key = (origin[0] or "?", int(origin[1] or ""), int(origin[2] or ""))
        except ValueError:
            key = ("?", -1, m.offset)  # no (or a garbled) origin: counted, not matched
        scan.dlq[key].append(reason)
        return
    try:
        if m.topic in topo.request_topics:
            job = codec.read_request(value)
            scan.requests[(job.tenant, job.job_id)].append(where)
        elif m.topic == topo.results_topic:
            result = codec.read(value, ScrapeResult)
            scan.results[(result.tenant, result.job_id)].append(where)
        elif m.topic == topo.routing_topic:
            codec.read(value, RouteFeedback)
        elif m.topic == topo.metering_topic:
            ev = codec.read(value, Metering)
            meter = scan.metering.get(ev.event_id)
            if meter is None:
                meter = Meter(ev.tenant, ev.job_id, int(ev.credits), ev.outcome)
                meter.where.append(where)
                # Keep only events of the window: attempts rows carry the same created_at.
                if ev.created_at >= cutoff:
                    scan.metering[ev.event_id] = meter
            else:
                meter.where.append(where)
    except DecodeError as exc:
        scan.undecodable.append((where, exc.reason))


def _start(hit: Any, end: int) -> int:
    return int(hit.offset) if hit is not None else end


async def _quietly(aw: Any) -> None:
    try:
        await aw
    except Exception:  # closing after a failure: the original error is what matters
        return
