"""The real Kafka broker and PostgreSQL server the integration and fault suites run against.

Each suite starts its own (the fault suite stops and restarts its broker and database), so
these are context managers rather than shared fixtures."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scrapifie.local.kafka import LocalKafka
from scrapifie.local.ports import free_port
from scrapifie.local.postgres import LocalPostgres

REPO = Path(__file__).resolve().parents[1]


def need(binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is required for these tests (make install provides it)")


@contextmanager
def started_kafka(data_dir: Path) -> Iterator[LocalKafka]:
    need("java")
    need("mvn")
    broker = LocalKafka(
        data_dir=data_dir,
        port=free_port(),
        controller_port=free_port(),
        pom=REPO / "deploy" / "kafka" / "pom.xml",
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@contextmanager
def started_postgres(data_dir: Path) -> Iterator[LocalPostgres]:
    db = LocalPostgres(data_dir=data_dir, port=free_port())
    db.start()
    try:
        yield db
    finally:
        db.stop()
        db.destroy()
