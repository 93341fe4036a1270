"""The ledger sink: one ``attempts`` row per metering event (credits charged once), one
``escalations`` row per tier hand-over, and a ``queued`` job row for every request seen on the
tier topics (for jobs published straight to Kafka). Undecodable requests are the tier workers'
to send to the DLQ; they are skipped here."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from connectors.sinks.base import Decoded
from connectors.sinks.pg import (
    INSERT_ATTEMPTS,
    INSERT_ESCALATIONS,
    INSERT_QUEUED,
    PgWriter,
    attempts_params,
    escalations_params,
    queued_params,
)
from schemas import TIER_ORDER, TopicSet
from schemas.records import Escalation, Metering, ScrapeRequest


class LedgerSink:
    name = "ledger"

    def __init__(self, topics: TopicSet, db: PgWriter) -> None:
        self._topics = topics
        self._db = db

    def topics(self) -> list[str]:
        return [
            self._topics.metering,
            self._topics.escalations,
            self._topics.requests,
            *map(self._topics.tier, TIER_ORDER),
        ]

    def dlq_topics(self) -> set[str]:
        return {self._topics.metering, self._topics.escalations}

    async def write(self, batch: list[Decoded]) -> None:
        attempts: list[Metering] = []
        escalations: list[Escalation] = []
        queued: list[ScrapeRequest] = []
        for d in batch:
            value = d.value
            if isinstance(value, Metering):
                attempts.append(value)
            elif isinstance(value, Escalation):
                escalations.append(value)
            elif isinstance(value, ScrapeRequest):
                if value.created_at.timestamp() <= 0:  # JSON producers may omit it
                    value = replace(value, created_at=datetime.now(UTC))
                queued.append(value)
        await self._db.execute_many(
            [
                (INSERT_QUEUED, queued_params(queued)),
                (INSERT_ATTEMPTS, attempts_params(attempts)),
                (INSERT_ESCALATIONS, escalations_params(escalations)),
            ]
        )
