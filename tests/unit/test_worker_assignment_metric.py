"""The tier worker reports which partitions it owns after each rebalance (the bench waits on it:
a worker that owns none does no work)."""

from __future__ import annotations

from pathlib import Path

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from schemas.kafka import KafkaConfig
from streams.config import FetchConfig, WorkerConfig
from streams.runtime.app import build_app

pytestmark = pytest.mark.unit


async def test_assigned_partitions_are_counted_per_topic(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    kafka = KafkaConfig(topic_prefix="t.")
    app = build_app("http", kafka, FetchConfig(), WorkerConfig(), registry, str(tmp_path))
    tier, delay = kafka.topics.tier("http"), kafka.topics.delay("http", 5)

    def owned(topic: str) -> float | None:
        return registry.get_sample_value("scrapifie_assigned_partitions", {"topic": topic})

    await app.on_partitions_assigned.send({TP(tier, 0), TP(tier, 3), TP(delay, 1)})
    assert (owned(tier), owned(delay)) == (2, 1)
    # A later rebalance replaces the counts; topics no longer owned drop to zero.
    await app.on_partitions_assigned.send({TP(tier, 5)})
    assert (owned(tier), owned(delay)) == (1, 0)
