"""The topics ``scrapifie verify`` reads and the consumer group that processes each."""

from __future__ import annotations

from dataclasses import dataclass

from schemas import DELAYS_S, TIER_ORDER
from scrapifie.settings import Settings

__all__ = ["Topology"]


@dataclass(frozen=True, slots=True)
class Topology:
    """Topic and consumer-group names of one deployment (its topic prefix and group prefixes)."""

    tier_topics: dict[str, str]  # tier topic -> tier
    delay_topics: dict[str, str]  # delay topic -> tier
    ingest_topics: list[str]
    request_topics: list[str]
    results_topic: str
    metering_topic: str
    routing_topic: str
    dlq_topic: str
    router_group: str
    results_group: str
    ledger_group: str
    consumer_of: dict[str, str]  # input topic -> the consumer group that processes it
    dlq_owner: dict[str, str]  # input topic -> the group that dead-letters its undecodable records

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        topics = settings.kafka.topics
        prefix = settings.kafka.topic_prefix
        tier_topics = {topics.tier(t): t.value for t in TIER_ORDER}
        delay_topics = {topics.delay(t, s): t.value for t in TIER_ORDER for s in DELAYS_S}
        # Where a job's ScrapeRequest can be: published (requests, tier topics), or parked.
        ingest_topics = [topics.requests, *tier_topics]
        request_topics = [*ingest_topics, *delay_topics]
        group = settings.worker.group_prefix
        router_group = f"{group}-{prefix}router"
        results_group = f"{settings.sink.group_prefix}-{prefix}sink-results"
        ledger_group = f"{settings.sink.group_prefix}-{prefix}sink-ledger"
        # The consumer group that processes each input topic (Faust app id = group id). A delay
        # topic is read by its tier's worker, which moves each record back to the tier topic.
        consumer_of: dict[str, str] = {
            topics.requests: router_group,
            topics.routing: router_group,
            **{t: f"{group}-{prefix}{tier}" for t, tier in tier_topics.items()},
            **{t: f"{group}-{prefix}{tier}" for t, tier in delay_topics.items()},
            topics.results: results_group,
            topics.metering: ledger_group,
        }
        # Whose undecodable records go to the DLQ with their own offset: every input topic but
        # the delay topics (their records are forwarded as they are, and DLQ'd from there).
        dlq_owner = {t: g for t, g in consumer_of.items() if t not in delay_topics}
        return cls(
            tier_topics=tier_topics,
            delay_topics=delay_topics,
            ingest_topics=ingest_topics,
            request_topics=request_topics,
            results_topic=topics.results,
            metering_topic=topics.metering,
            routing_topic=topics.routing,
            dlq_topic=topics.dlq,
            router_group=router_group,
            results_group=results_group,
            ledger_group=ledger_group,
            consumer_of=consumer_of,
            dlq_owner=dlq_owner,
        )
