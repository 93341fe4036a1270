"""The router: jobs with ``tier: auto`` (scrape.requests) go to the tier where their site has
been succeeding. Its memory is per site, fed by the tiers' RouteFeedback on scrape.routing; both
topics are keyed by site with equal partitions, so one router instance owns a site's decisions
and its learning. The decision and its reason travel on the job (``router_reason``).

The memory is a plain dict, warmed at start from the last ``router_warmup_s`` of
scrape.routing, not a Faust table: with a table, a router restarted with history stopped
consuming scrape.requests after recovery (faust-streaming 0.15.3; an event delivered while the
table recovered was the last one the agent saw), so auto jobs never ended
(tests/faults/test_router_restart.py). What is forgotten across a restart is older learning:
those sites start on the cheapest tier again and escalate, which costs a fetch, never a job."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import faust
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter

from schemas import TIER_ORDER, DecodeError, default_codec, site_key
from schemas.kafka import EventProducer, KafkaConfig
from schemas.records import RouteFeedback
from streams.config import WorkerConfig
from streams.routing.learned import RoutingPolicy, choose, observe
from streams.runtime.faust_io import dead_letter, event_headers, new_app, raw_topic

log = logging.getLogger(__name__)
WARMUP_TIMEOUT_S = 30.0
_TIERS = [t.value for t in TIER_ORDER]


def build_router(
    kafka: KafkaConfig,
    worker: WorkerConfig,
    registry: CollectorRegistry,
    datadir: str,
) -> faust.App:
    topics = kafka.topics
    app = new_app(
        f"{worker.group_prefix}-{kafka.topic_prefix}router",
        kafka,
        datadir,
        instance_id=f"{worker.instance_id}-router" if worker.instance_id else None,
        session_timeout_s=worker.session_timeout_s,
    )
    requests = raw_topic(app, topics.requests)
    feedback = raw_topic(app, topics.routing)
    routes: dict[str, Any] = {}
    policy = RoutingPolicy()
    routed = Counter(
        "scrapifie_routed_total",
        "Auto jobs routed, by tier and kind of reason.",
        ["tier", "why"],
        registry=registry,
    )
    codec = default_codec()

    async def route_one(producer: EventProducer, msg: Any) -> None:
        job = codec.read_request(msg.value)
        site = site_key(job.url) or "?"
        max_tier = job.max_tier if job.max_tier in _TIERS else _TIERS[-1]
        tier, reason, state = choose(routes.get(site), max_tier, time.time(), policy)
        job.tier, job.router_reason = tier, reason
        await producer.send(
            topics.tier(tier),
            codec.write(job),
            key=msg.key or site.encode(),
            headers=event_headers(msg.headers),
        )
        routes[site] = state
        routed.labels(tier, reason.split(":", 1)[0]).inc()

    async def learn_one(_producer: EventProducer, msg: Any) -> None:
        learn(routes, codec.read(msg.value, RouteFeedback), policy)

    def agent(
        role: str, handle: Callable[[EventProducer, Any], Awaitable[None]]
    ) -> Callable[[Any], Coroutine[Any, Any, None]]:
        """Each record is handled once and acked; one that cannot be used goes to the DLQ with
        the reason, so a bad record can neither stop the agent nor be skipped silently."""

        async def run(stream: Any) -> None:
            if role == "router":
                await warmed.wait()  # decide with the memory the warm-up rebuilt
            noack = stream.noack()
            async with EventProducer(kafka, role) as producer:
                async for event in noack.events():
                    msg = event.message
                    try:
                        await handle(producer, msg)
                    except DecodeError as exc:
                        log.warning("%s: undecodable record sent to the DLQ: %s", role, exc)
                        await dead_letter(producer, topics.dlq, msg, exc.reason, exc.detail)
                    except (asyncio.CancelledError, KafkaError):
                        raise  # shutdown, or Kafka refusing our output: the input stays unacked
                    except Exception as exc:
                        log.exception("%s: processing failed", role)
                        if role == "router":
                            # A job is never dropped for a routing fault: the http tier gets
                            # it as it came and ends it, fetched or failed with the reason.
                            await producer.send(
                                topics.tier(_TIERS[0]),
                                msg.value,
                                key=msg.key,
                                headers=event_headers(msg.headers),
                            )
                        else:
                            await dead_letter(
                                producer,
                                topics.dlq,
                                msg,
                                "processing_error",
                                f"{type(exc).__name__}: {exc}",
                            )
                    await noack.ack(event)

        return run

    warmed = asyncio.Event()

    async def warm_up() -> None:
        """Learn from the recent past of scrape.routing before the first decision. Bounded:
        past WARMUP_TIMEOUT_S (or on any error) routing starts with what is known."""
        try:
            async with asyncio.timeout(WARMUP_TIMEOUT_S):
                learned = await replay_feedback(kafka, worker.router_warmup_s, policy)
            for site, state in learned.items():
                routes.setdefault(site, state)
            log.info("router warmed up from %d sites' recent feedback", len(learned))
        except Exception as exc:
            log.warning("router warm-up skipped (%s): routing starts without history", exc)
        finally:
            warmed.set()

    app.task(warm_up)

    app.agent(requests, name="router", concurrency=1)(agent("router", route_one))
    app.agent(feedback, name="router-learn", concurrency=1)(agent("router-learn", learn_one))
    return app


def learn(routes: dict[str, Any], fb: RouteFeedback, policy: RoutingPolicy) -> None:
    """Fold one RouteFeedback into the memory, at the time the tier observed it."""
    routes[fb.site] = observe(
        routes.get(fb.site), fb.tier, fb.blocked, fb.created_at.timestamp(), policy
    )


async def replay_feedback(
    kafka: KafkaConfig, window_s: float, policy: RoutingPolicy
) -> dict[str, Any]:
    """The memory that the last ``window_s`` seconds of scrape.routing build, read with a
    consumer of its own (no group: nothing is committed), up to the end offsets at start."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = kafka.topics.routing
    codec = default_codec()
    learned: dict[str, Any] = {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        client_id=f"{kafka.client_id}-router-warmup",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=kafka.max_message_bytes + 65536,
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        if not parts or window_s <= 0:
            return learned
        consumer.assign(parts)
        since_ms = int((time.time() - window_s) * 1000)
        starts = await consumer.offsets_for_times(dict.fromkeys(parts, since_ms))
        ends = await consumer.end_offsets(parts)
        todo = {}
        for tp in parts:
            start = starts.get(tp)
            if start is not None and start.offset < ends[tp]:
                consumer.seek(tp, start.offset)
                todo[tp] = ends[tp]
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, msgs in batch.items():
                for m in msgs:
                    if m.offset < todo.get(tp, 0):
                        try:
                            learn(learned, codec.read(m.value or b"", RouteFeedback), policy)
                        except DecodeError:
                            continue  # the live agent sends it to the DLQ
                if msgs and msgs[-1].offset + 1 >= todo.get(tp, 0):
                    todo.pop(tp, None)
            if not batch:
                for tp in list(todo):
                    if await consumer.position(tp) >= todo[tp]:
                        todo.pop(tp)
    finally:
        await consumer.stop()
    return learned


async def _partitions(consumer: Any, topic: str) -> set[int]:
    parts = consumer.partitions_for_topic(topic)
    if parts is None:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    return set(parts or ())
