"""The router: jobs with ``tier: auto`` (scrape.requests) go to the tier where their site has
been succeeding. Its memory is a Faust table keyed by site, fed by the tiers' RouteFeedback on
scrape.routing; both topics are keyed by site with equal partitions, so one router instance owns
a site's decisions and its learning. The decision and its reason travel on the job
(``router_reason``)."""

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
    # value_type=None: values are plain JSON objects. With value_type=dict Faust (0.15.3) writes
    # the changelog fine but cannot read it back (`dict` has no `from_data`): after any restart
    # with history the table never recovered and auto jobs were never routed again
    # (tests/faults/test_router_restart.py).
    routes = app.Table(
        "site-routes", default=None, partitions=CHANGELOG_PARTITIONS, key_type=str, value_type=None
    )
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
        fb = codec.read(msg.value, RouteFeedback)
        routes[fb.site] = observe(routes.get(fb.site), fb.tier, fb.blocked, time.time(), policy)

    def agent(
        role: str, handle: Callable[[EventProducer, Any], Awaitable[None]]
    ) -> Callable[[Any], Coroutine[Any, Any, None]]:
        """Each record is handled once and acked; one that cannot be used goes to the DLQ with
        the reason, so a bad record can neither stop the agent nor be skipped silently."""

        async def run(stream: Any) -> None:
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

    app.conf.scrapifie_changelog = routes.changelog_topic.get_topic_name()
    app.agent(requests, name="router", concurrency=1)(agent("router", route_one))
    app.agent(feedback, name="router-learn", concurrency=1)(agent("router-learn", learn_one))
    return app
