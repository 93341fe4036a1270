"""Sinks: Kafka topics → PostgreSQL and object storage. See base.py for the delivery invariants."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry

from connectors.config import SinkConfig, StorageConfig
from connectors.sinks.base import SinkMetrics, SinkRunner
from connectors.sinks.ledger import LedgerSink
from connectors.sinks.pg import PgWriter
from connectors.sinks.results import ResultsSink
from connectors.storage import open_store
from schemas import default_codec
from schemas.kafka import EventProducer, KafkaConfig

__all__ = ["run_sinks"]


async def run_sinks(
    kafka: KafkaConfig,
    config: SinkConfig,
    storage: StorageConfig,
    dsn: str,
    data_dir: Path,
    registry: CollectorRegistry,
    stop: asyncio.Event,
) -> None:
    """Run the results and ledger sinks until ``stop`` is set."""
    metrics = SinkMetrics(registry)
    store = open_store(storage, data_dir)
    results_db, ledger_db = PgWriter(dsn), PgWriter(dsn)
    try:
        async with EventProducer(kafka, "sink") as producer:
            runners = [
                SinkRunner(
                    ResultsSink(kafka.topics, results_db, store),
                    kafka,
                    config,
                    producer,
                    default_codec(),
                    metrics,
                ),
                SinkRunner(
                    LedgerSink(kafka.topics, ledger_db),
                    kafka,
                    config,
                    producer,
                    default_codec(),
                    metrics,
                ),
            ]
            await asyncio.gather(*(r.run(stop) for r in runners))
    finally:
        await results_db.close()
        await ledger_db.close()
