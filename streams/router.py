"""The router: jobs with ``tier: auto`` (scrape.requests) go to the tier where their site has
been succeeding. Its memory is a Faust table keyed by site, fed by the tiers' RouteFeedback on
scrape.routing; both topics are keyed by site with equal partitions, so one router instance owns
a site's decisions and its learning. The decision and its reason travel on the job
(``router_reason``)."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from prometheus_client import CollectorRegistry, Counter

from schemas import TIER_ORDER, DecodeError, default_codec, site_key
from schemas.kafka import EventProducer, KafkaConfig
from streams.config import WorkerConfig
from streams.faust_io import dead_letter, event_headers, new_app, raw_topic
from streams.routing import RoutingPolicy, choose, observe

log = logging.getLogger(__name__)
_TIERS = [t.value for t in TIER_ORDER]


CHANGELOG_PARTITIONS = 6  # = scrape.requests and scrape.routing


def changelog_topic(app: faust.App) -> str:
    """Name of the router table's changelog topic (compacted, CHANGELOG_PARTITIONS)."""
    return str(app.conf.scrapifie_changelog)


def build_router(
    kafka: KafkaConfig, worker: WorkerConfig, registry: CollectorRegistry, datadir: str
) -> faust.App:
    topics = kafka.topics
    # The table's changelog topic is created before the worker starts (scrapifie router):
    # Faust declaring it itself raced the first table write (PartitionsMismatch, 0 partitions).
    app = new_app(
        f"{worker.group_prefix}-{kafka.topic_prefix}router",
        kafka,
        datadir,
        instance_id=f"{worker.instance_id}-router" if worker.instance_id else None,
        session_timeout_s=worker.session_timeout_s,
        table_cleanup_interval=60.0,
    )
    requests = raw_topic(app, topics.requests)
    feedback = raw_topic(app, topics.routing)
    routes = app.Table(
        "site-routes", default=None, partitions=CHANGELOG_PARTITIONS, key_type=str, value_type=dict
    )
    policy = RoutingPolicy()
    routed = Counter(
        "scrapifie_routed_total",
        "Auto jobs routed, by tier and kind of reason.",
        ["tier", "why"],
        registry=registry,
    )
    codec = default_codec()

    async def route(stream: Any) -> None:
        noack = stream.noack()
        async with EventProducer(kafka, "router") as producer:
            async for event in noack.events():
                msg = event.message
                try:
                    job = codec.decode_request(msg.value)
                except DecodeError as exc:
                    await dead_letter(producer, topics.dlq, msg, exc.reason, exc.detail)
                    await noack.ack(event)
                    continue
                site = site_key(job["url"]) or "?"
                max_tier = job["max_tier"] if job["max_tier"] in _TIERS else _TIERS[-1]
                tier, reason, state = choose(routes.get(site), max_tier, time.time(), policy)
                job["tier"], job["router_reason"] = tier, reason
                await producer.send(
                    topics.tier(tier),
                    codec.encode("ScrapeRequest", job),
                    key=msg.key or site.encode(),
                    headers=event_headers(msg.headers),
                )
                routes[site] = state
                routed.labels(tier, reason.split(":", 1)[0]).inc()
                await noack.ack(event)

    async def learn(stream: Any) -> None:
        noack = stream.noack()
        async with EventProducer(kafka, "router-learn") as producer:
            async for event in noack.events():
                msg = event.message
                try:
                    _name, fb = codec.decode(msg.value, expect="RouteFeedback")
                except DecodeError as exc:
                    log.warning("undecodable routing feedback sent to the DLQ: %s", exc)
                    await dead_letter(producer, topics.dlq, msg, exc.reason, exc.detail)
                else:
                    routes[fb["site"]] = observe(
                        routes.get(fb["site"]), fb["tier"], fb["blocked"], time.time(), policy
                    )
                await noack.ack(event)

    app.conf.scrapifie_changelog = routes.changelog_topic.get_topic_name()
    app.agent(requests, name="router", concurrency=1)(route)
    app.agent(feedback, name="router-learn", concurrency=1)(learn)
    return app
