"""Every topic of the pipeline, declared once: name, key, value schema, partitions, config.

Producers and consumers outside this repository need only this module and :mod:`schemas.codec`.
A deployment may prefix every name (``TopicSet(prefix="staging.")``); tests use a unique prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final


class Tier(StrEnum):
    HTTP = "http"
    BROWSER = "browser"
    STEALTH = "stealth"


TIER_ORDER: Final = (Tier.HTTP, Tier.BROWSER, Tier.STEALTH)

# Delay topics hold jobs for a fixed time each, so every partition is in due-time order and the
# head is always the next record due: no job waits behind a later one.
DELAYS_S: Final = (5, 30, 300)


def delay_bucket(seconds: float) -> int:
    """The smallest delay topic that waits at least ``seconds`` (the longest one if none)."""
    for bucket in DELAYS_S:
        if seconds <= bucket:
            return bucket
    return DELAYS_S[-1]


class Key(StrEnum):
    SITE = "site"  # registrable domain of the URL (schemas.keys.site_key)
    JOB_ID = "job_id"


class Role(StrEnum):
    """The processes of a deployment, as they produce to and consume from topics. ``scrapifie
    <role>`` runs one (a worker per tier); OPERATOR is a person or program outside it."""

    GATEWAY = "gateway"
    ROUTER = "router"
    WORKER_HTTP = "worker-http"
    WORKER_BROWSER = "worker-browser"
    WORKER_STEALTH = "worker-stealth"
    SINK = "sink"
    OPERATOR = "operator"


WORKERS: Final = {
    Tier.HTTP: Role.WORKER_HTTP,
    Tier.BROWSER: Role.WORKER_BROWSER,
    Tier.STEALTH: Role.WORKER_STEALTH,
}
_ALL_WORKERS: Final = tuple(WORKERS.values())


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic. ``value`` names the Avro record (None: raw bytes, as on the DLQ).
    ``producers`` and ``consumers`` are the roles that write and read it: a deployment that
    runs a producer of a topic must run one of its consumers, or records pile up unread."""

    base: str
    key: Key
    value: str | None
    partitions: int
    doc: str
    config: dict[str, str] = field(default_factory=dict)
    producers: tuple[Role, ...] = ()
    consumers: tuple[Role, ...] = ()


# Large enough for a result carrying a capped, gzipped page plus a screenshot.
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
_BIG = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}


def _tier_topic(tier: Tier, partitions: int) -> TopicSpec:
    lower = TIER_ORDER[: TIER_ORDER.index(tier)]
    return TopicSpec(
        f"scrape.{tier.value}",
        Key.SITE,
        "ScrapeRequest",
        partitions,
        f"jobs for the {tier.value} tier",
        # The gateway and producers; the router (auto jobs); lower tiers escalating; the tier's
        # own delay releasers. The ledger sink writes a queued row for every job it sees.
        producers=(
            Role.GATEWAY,
            Role.OPERATOR,
            Role.ROUTER,
            WORKERS[tier],
            *(WORKERS[t] for t in lower),
        ),
        consumers=(WORKERS[tier], Role.SINK),
    )


SPECS: Final[tuple[TopicSpec, ...]] = (
    TopicSpec(
        "scrape.requests",
        Key.SITE,
        "ScrapeRequest",
        6,
        "jobs with tier auto (router input)",
        producers=(Role.GATEWAY, Role.OPERATOR),
        consumers=(Role.ROUTER, Role.SINK),
    ),
    _tier_topic(Tier.HTTP, 6),
    _tier_topic(Tier.BROWSER, 6),
    _tier_topic(Tier.STEALTH, 3),
    TopicSpec(
        "scrape.results",
        Key.JOB_ID,
        "ScrapeResult",
        6,
        "one final result per job",
        _BIG,
        producers=_ALL_WORKERS,
        consumers=(Role.SINK, Role.OPERATOR),
    ),
    TopicSpec(
        "scrape.escalations",
        Key.JOB_ID,
        "Escalation",
        3,
        "tier hand-overs",
        producers=_ALL_WORKERS,
        consumers=(Role.SINK,),
    ),
    TopicSpec(
        "scrape.routing",
        Key.SITE,
        "RouteFeedback",
        6,  # must equal scrape.requests: the router reads both into one table
        "per-site outcomes the router learns from",
        producers=_ALL_WORKERS,
        consumers=(Role.ROUTER,),
    ),
    TopicSpec(
        "scrape.metering",
        Key.JOB_ID,
        "Metering",
        3,
        "usage per attempt",
        producers=_ALL_WORKERS,
        consumers=(Role.SINK,),
    ),
    *(
        TopicSpec(
            f"scrape.{tier.value}.delay.{seconds}s",
            Key.SITE,
            "ScrapeRequest",
            3,
            f"{tier.value} jobs waiting {seconds}s before going back to scrape.{tier.value}"
            " (retries with backoff, sites at their limit)",
            producers=(WORKERS[tier],),
            consumers=(WORKERS[tier],),
        )
        for tier in Tier
        for seconds in (5, 30, 300)
    ),
    TopicSpec(
        "scrape.dlq",
        Key.JOB_ID,
        None,
        3,
        "undecodable or unprocessable records: original bytes; reason in headers",
        _BIG,
        producers=(Role.ROUTER, *_ALL_WORKERS, Role.SINK),
        consumers=(Role.OPERATOR,),
    ),
)


@dataclass(frozen=True, slots=True)
class TopicSet:
    """Resolved topic names for one deployment."""

    prefix: str = ""

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def requests(self) -> str:
        return self.name("scrape.requests")

    def tier(self, tier: Tier | str) -> str:
        return self.name(f"scrape.{Tier(tier).value}")

    def delay(self, tier: Tier | str, seconds: int) -> str:
        if seconds not in DELAYS_S:
            raise ValueError(f"no delay topic of {seconds}s; valid: {DELAYS_S}")
        return self.name(f"scrape.{Tier(tier).value}.delay.{seconds}s")

    @property
    def results(self) -> str:
        return self.name("scrape.results")

    @property
    def escalations(self) -> str:
        return self.name("scrape.escalations")

    @property
    def metering(self) -> str:
        return self.name("scrape.metering")

    @property
    def routing(self) -> str:
        return self.name("scrape.routing")

    @property
    def dlq(self) -> str:
        return self.name("scrape.dlq")

    def all(self) -> list[tuple[str, TopicSpec]]:
        return [(self.name(s.base), s) for s in SPECS]
