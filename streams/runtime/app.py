"""The Faust app of one tier worker.

One agent (``concurrency=1``) per tier topic. It starts a handler task per record and
acknowledges through :class:`~streams.runtime.ordered.OrderedAcks`, so up to ``max_in_flight``
fetches run at once without Faust committing past one still in flight (see ordered.py).
Values are read as raw bytes and decoded by our codec inside the handler, so an undecodable
value reaches the DLQ instead of crashing the agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from schemas import DELAYS_S, DecodeError, TopicSet, default_codec
from schemas.kafka import EventProducer, KafkaConfig
from schemas.options import DEFAULT_LIMITS, JobLimits
from schemas.prices import DEFAULT_PRICES, Prices
from streams.browser.config import BrowserConfig
from streams.cache import FetchCache
from streams.config import FetchConfig, WorkerConfig
from streams.fetchers.egress import EgressConfig, EgressFetcher, EgressPools
from streams.fetchers.http import HttpFetcher
from streams.metrics import BrowserPoolCollector, StreamMetrics
from streams.politeness import RobotsCache, SiteLimiter
from streams.runtime.faust_io import dead_letter, event_headers, new_app, raw_topic
from streams.runtime.ordered import OrderedAcks
from streams.tenants import TenantDirectory
from streams.tier.extract_runner import ExtractRunner
from streams.tier.processor import InputRecord, TierProcessor

log = logging.getLogger(__name__)

SUPPORTED_TIERS = ("http", "browser", "stealth")


def build_app(
    tier: str,
    kafka: KafkaConfig,
    fetch: FetchConfig,
    worker: WorkerConfig,
    registry: CollectorRegistry,
    datadir: str,
    egress: EgressConfig | None = None,
    browser: BrowserConfig | None = None,
    limits: JobLimits = DEFAULT_LIMITS,
    cache: FetchCache | None = None,
    prices: Prices = DEFAULT_PRICES,
    tenants: TenantDirectory | None = None,
) -> faust.App:
    """A Faust app consuming ``scrape.<tier>``. Topics must exist (``scrapifie topics``)."""
    if tier not in SUPPORTED_TIERS:
        raise ValueError(f"unknown tier {tier!r}; valid: {', '.join(SUPPORTED_TIERS)}")
    topics: TopicSet = kafka.topics
    app = new_app(
        f"{worker.group_prefix}-{kafka.topic_prefix}{tier}",
        kafka,
        datadir,
        instance_id=worker.instance_id,
        session_timeout_s=worker.session_timeout_s,
        broker_commit_interval=1.0,
        broker_commit_every=200,
        consumer_max_fetch_size=kafka.max_message_bytes + 65536,
        stream_buffer_maxsize=max(256, worker.max_in_flight * 2),
        producer_max_request_size=kafka.max_message_bytes + 65536,
    )
    source = raw_topic(app, topics.tier(tier))
    in_flight = worker.max_in_flight
    if tier != "http":
        # More jobs than the pool can render would only wait inside it: let them wait in Kafka.
        cfg = browser or BrowserConfig()
        capacity = cfg.browsers * cfg.contexts_per_browser + cfg.persistent_contexts
        in_flight = min(in_flight, capacity)
    metrics = StreamMetrics(registry)
    consumed = [topics.tier(tier), *(topics.delay(tier, seconds) for seconds in DELAYS_S)]

    def count_assigned(_sender: Any, /, *args: Any, signal: Any, **_kwargs: Any) -> None:
        """After each rebalance: how many partitions of each topic this worker now owns (a
        worker that owns none does no work; the bench waits until every worker owns some)."""
        assigned: set[Any] = args[0] if args else set()
        for topic in consumed:
            metrics.assigned_partitions.labels(topic).set(
                sum(1 for tp in assigned if tp.topic == topic)
            )

    app.on_partitions_assigned.connect(count_assigned)

    async def process(stream: Any) -> None:
        codec = default_codec()
        noack = stream.noack()
        async with (
            EventProducer(kafka, f"worker-{tier}") as producer,
            _fetcher(tier, fetch, browser) as fetcher,
        ):
            pool_metrics = None
            if tier != "http":
                pool_metrics = BrowserPoolCollector(tier, fetcher.pool.stats)
                registry.register(pool_metrics)
            limiter = SiteLimiter(
                worker.site_default, worker.site_limits, max_delay_s=worker.max_site_delay_s
            )
            egress_fetcher = EgressFetcher(
                fetcher,
                EgressPools(egress if egress is not None else EgressConfig()),
                tier,
                lambda pool, proxy, ok: metrics.egress.labels(
                    pool, proxy, "ok" if ok else "fail"
                ).inc(),
                default_timeout_s=fetch.timeout_s,
            )
            robots = RobotsCache(egress_fetcher, worker.robots_agent, ttl_s=worker.robots_ttl_s)
            processor = TierProcessor(
                tier,
                egress_fetcher,
                producer,
                codec,
                topics,
                metrics,
                fetch,
                worker,
                limiter,
                robots,
                limits,
                kafka.max_message_bytes,
                cache,
                ExtractRunner(worker.extract_timeout_s),
                prices,
                tenants,
            )
            window: OrderedAcks[Any] = OrderedAcks(in_flight, noack.ack)
            try:
                async for event in noack.events():
                    msg = event.message
                    rec = InputRecord(
                        topic=msg.topic,
                        partition=msg.partition,
                        offset=msg.offset,
                        key=msg.key,
                        value=msg.value,
                        headers=list(event_headers(msg.headers)),
                    )
                    await window.submit(msg.tp, event, processor.handle(rec))
                await window.join()
            finally:
                # Unfinished handlers are cancelled unacked: they are re-delivered later.
                await window.cancel()
                if pool_metrics is not None:
                    registry.unregister(pool_metrics)

    app.agent(source, name=f"{tier}-processor", concurrency=1)(process)
    for seconds in DELAYS_S:
        delay_topic = raw_topic(app, topics.delay(tier, seconds))
        app.agent(delay_topic, name=f"{tier}-delay-{seconds}s", concurrency=1)(
            _releaser(tier, seconds, kafka, topics, metrics)
        )
    return app


def _fetcher(tier: str, fetch: FetchConfig, browser: BrowserConfig | None) -> Any:
    if tier == "http":
        return HttpFetcher(fetch)
    from streams.browser.fetcher import BrowserFetcher

    return BrowserFetcher(fetch, browser or BrowserConfig())


def _releaser(
    tier: str, seconds: int, kafka: KafkaConfig, topics: TopicSet, metrics: StreamMetrics
) -> Callable[[Any], Coroutine[Any, Any, None]]:
    """An agent that moves each record of a delay topic back to the tier topic once it has
    waited ``seconds`` since it was produced. Records of a delay topic are in due order, so
    waiting for the head never delays a record that is due earlier. The offset is acked only
    after the record is back in the tier topic: a crash re-releases, never loses."""

    codec = default_codec()

    async def release(stream: Any) -> None:
        noack = stream.noack()
        async with EventProducer(kafka, f"worker-{tier}-delay") as producer:
            async for event in noack.events():
                msg = event.message
                try:
                    # Only records the tier can read go back to it: a poison record parked here
                    # reaches the DLQ naming this topic, where it was actually published.
                    codec.read_request(msg.value)
                except DecodeError as exc:
                    await dead_letter(producer, topics.dlq, msg, exc.reason, exc.detail)
                    metrics.dlq.labels(msg.topic, exc.reason).inc()
                    await noack.ack(event)
                    continue
                wait = (msg.timestamp or 0) + seconds - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await producer.send(
                    topics.tier(tier), msg.value, key=msg.key, headers=event_headers(msg.headers)
                )
                metrics.released.labels(tier, str(seconds)).inc()
                await noack.ack(event)

    return release
