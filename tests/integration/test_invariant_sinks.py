"""The invariant through to PostgreSQL: whatever a website sends and whatever options a job
carries, the records one attempt emits are written by the real sinks into the real PostgreSQL
server and object store: a final result makes exactly one final job row (and an object for a
page), a metering event exactly one attempt row."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.db import migrate
from connectors.sinks.base import Decoded
from connectors.sinks.ledger import LedgerSink
from connectors.sinks.pg import PgWriter
from connectors.sinks.results import ResultsSink
from connectors.storage import LocalObjectStore
from schemas import TopicSet, default_codec
from schemas.records import ScrapeResult
from scrapifie.admin import add_tenant
from scrapifie.local.postgres import LocalPostgres
from streams.errors import FetchError
from streams.fetchers.base import FetchResponse
from tests.processor_harness import (
    KafkaLike,
    Scripted,
    errors,
    input_record,
    jobs,
    processor,
    responses,
)

pytestmark = pytest.mark.integration

TOPICS = TopicSet("inv.")
LIMIT = 256 * 1024


class Env:
    def __init__(self, dsn: str, tenant: str, root: Path) -> None:
        self.dsn, self.tenant = dsn, tenant
        self.loop = asyncio.new_event_loop()
        self.writer = PgWriter(dsn)
        self.store = LocalObjectStore(root)
        self.results = ResultsSink(TOPICS, self.writer, self.store)
        self.ledger = LedgerSink(TOPICS, self.writer)


@pytest.fixture(scope="module")
def env(postgres: LocalPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tenant = f"inv-{uuid.uuid4().hex[:8]}"

    async def prepare() -> None:
        await migrate(postgres.dsn)
        await add_tenant(postgres.dsn, tenant, 1_000_000)

    e = Env(postgres.dsn, tenant, tmp_path_factory.mktemp("objects"))
    e.loop.run_until_complete(prepare())
    yield e
    e.loop.run_until_complete(e.writer.close())
    e.loop.close()


def _decoded(sent: list[Any], request: bytes) -> list[Decoded]:
    codec = default_codec()
    out = [Decoded(TOPICS.tier("http"), 0, 0, codec.read_request(request), None)]  # type: ignore[arg-type]
    for topic, _key, value, _headers in sent:
        if topic in (TOPICS.results, TOPICS.metering):
            out.append(Decoded(topic, 0, 0, codec.read_any(value), None))  # type: ignore[arg-type]
    return out


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(job=st.data(), answer=st.one_of(responses, errors))
def test_every_attempt_is_written_by_the_sinks(
    env: Env, job: st.DataObject, answer: FetchResponse | FetchError
) -> None:
    record = job.draw(jobs(env.tenant))
    record.job_id = str(uuid.uuid4())  # generated ids repeat across examples; rows must not
    fetcher = (
        Scripted(error=answer) if isinstance(answer, FetchError) else Scripted(response=answer)
    )
    producer = KafkaLike(LIMIT)
    request = input_record(default_codec(), TOPICS, record)

    async def run() -> None:
        await processor(fetcher, producer, TOPICS, LIMIT).handle(request)
        batch = _decoded(producer.sent, request.value)
        await env.ledger.write([d for d in batch if not isinstance(d.value, ScrapeResult)])
        await env.results.write([d for d in batch if isinstance(d.value, ScrapeResult)])

    env.loop.run_until_complete(run())
    results = [r for t, _k, r, _h in producer.sent if t == TOPICS.results]
    with psycopg.connect(env.dsn) as conn:
        row = conn.execute(
            "SELECT status, error_code, content_key FROM jobs WHERE tenant_id = %s AND job_id = %s",
            (env.tenant, record.job_id),
        ).fetchone()
        attempts = conn.execute(
            "SELECT count(*) FROM attempts WHERE tenant_id = %s AND job_id = %s",
            (env.tenant, record.job_id),
        ).fetchone()
    assert row is not None, "the job has no row"
    assert attempts == (1,)
    if results:
        status, _code, content_key = row
        assert status in ("succeeded", "failed")
        if status == "succeeded":
            assert content_key and (env.store._root / content_key).exists()
    else:
        assert row[0] == "queued"  # handed on to a retry or the next tier
