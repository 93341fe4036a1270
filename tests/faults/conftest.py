"""Backends the fault tests may break, separate from the integration suite's: one Kafka broker,
one PostgreSQL server, one moto S3 server behind a failure-injecting proxy, and a slow target
site, shared by the fault tests (started once: a broker takes seconds to start). Each test gets
its own stack on them: a fresh topic prefix, database, bucket, tenant and processes, so no test
sees another's data, and every backend is brought back up before the next test starts."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from connectors.db import migrate
from schemas.kafka import KafkaConfig
from scrapifie.admin import add_tenant, ensure_topics
from scrapifie.local.kafka import LocalKafka
from scrapifie.local.ports import free_port
from scrapifie.local.postgres import LocalPostgres
from scrapifie.testing.procstack import base_env
from tests.faults.infra import REPO, FaultStack, S3Proxy, SlowSite
from tests.services import started_kafka, started_postgres

INITIAL_CREDITS = 1_000_000
_FIGURES = pytest.StashKey[list[dict[str, Any]]]()


@pytest.fixture(scope="session")
def fault_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    with started_kafka(tmp_path_factory.mktemp("fault-kafka")) as broker:
        yield broker


@pytest.fixture(scope="session")
def fault_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    with started_postgres(tmp_path_factory.mktemp("fault-pg") / "cluster") as db:
        yield db


@pytest.fixture(scope="session")
def fault_s3() -> Iterator[S3Proxy]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request
    upstream = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=upstream, verbose=False)
    server.start()
    try:
        with S3Proxy(upstream, free_port()) as proxy:
            yield proxy
    finally:
        server.stop()


@pytest.fixture(scope="session")
def slow_site() -> Iterator[SlowSite]:
    with SlowSite() as site:
        yield site


StackFactory = Callable[..., Awaitable[FaultStack]]


@pytest.fixture
def make_stack(
    fault_kafka: LocalKafka,
    fault_pg: LocalPostgres,
    fault_s3: S3Proxy,
    slow_site: SlowSite,
    tmp_path: Path,
) -> Iterator[StackFactory]:
    """``await make_stack(**env)`` starts a worker, the router, the sinks and the gateway on
    fresh names and returns the stack once the gateway is ready. Keyword arguments are
    SCRAPIFIE_ variables (``WORKER__MAX_IN_FLIGHT="32"``)."""
    # A previous test may have failed mid-outage: every backend is up before this one starts.
    if not fault_kafka.running:
        fault_kafka.start()
    if not fault_pg.is_running():
        fault_pg.start()
    fault_s3.set_mode("pass")
    stacks: list[FaultStack] = []

    async def factory(**extra_env: str) -> FaultStack:
        prefix = f"f{uuid.uuid4().hex[:8]}."
        name = prefix.rstrip(".")
        dsn = await asyncio.to_thread(_create_database, fault_pg, name)
        bucket = f"scrapifie-{name}"
        tenant = f"tenant-{name}"
        cfg = KafkaConfig(bootstrap=fault_kafka.bootstrap, topic_prefix=prefix)
        data, logs = tmp_path / f"{name}-data", tmp_path / f"{name}-logs"
        data.mkdir()
        logs.mkdir()
        site_limits = {"127.0.0.1": {"rate_per_s": 100000, "concurrency": 256}}
        env = {
            **base_env(),
            "SCRAPIFIE_DATA_DIR": str(data),
            "SCRAPIFIE_LOG_FORMAT": "text",
            "SCRAPIFIE_KAFKA__BOOTSTRAP": fault_kafka.bootstrap,
            "SCRAPIFIE_KAFKA__TOPIC_PREFIX": prefix,
            "SCRAPIFIE_POSTGRES__DSN": dsn,
            "SCRAPIFIE_STORAGE__BACKEND": "s3",
            "SCRAPIFIE_STORAGE__S3_ENDPOINT_URL": fault_s3.url,
            "SCRAPIFIE_STORAGE__S3_BUCKET": bucket,
            "SCRAPIFIE_STORAGE__S3_ACCESS_KEY_ID": "testing",
            "SCRAPIFIE_STORAGE__S3_SECRET_ACCESS_KEY": "testing",
            "SCRAPIFIE_GATEWAY__PORT": str(free_port()),
            "SCRAPIFIE_WORKER_METRICS_PORT": str(free_port()),
            "SCRAPIFIE_SINK_METRICS_PORT": str(free_port()),
            "SCRAPIFIE_ROUTER_METRICS_PORT": str(free_port()),
            # Only the http tier runs here; jobs go through the router (tier auto).
            "SCRAPIFIE_GATEWAY__TIERS": '["http"]',
            # The scenarios submit in bursts; the per-tenant rate limit is not what they test.
            "SCRAPIFIE_GATEWAY__RATE_PER_S": "100000",
            # Private targets are refused unless listed exactly (SSRF guard); the local target
            # is fast, so the polite per-site default rate is lifted for it.
            "SCRAPIFIE_FETCH__ALLOW_PRIVATE": json.dumps([slow_site.hostport]),
            "SCRAPIFIE_WORKER__SITE_LIMITS": json.dumps(site_limits),
            **{f"SCRAPIFIE_{k.upper()}": v for k, v in extra_env.items()},
        }

        await ensure_topics(cfg)
        await migrate(dsn)
        api_key = await add_tenant(dsn, tenant, INITIAL_CREDITS)
        st = FaultStack(
            kafka=cfg,
            broker=fault_kafka,
            pg=fault_pg,
            dsn=dsn,
            s3=fault_s3,
            bucket=bucket,
            gateway=f"http://127.0.0.1:{env['SCRAPIFIE_GATEWAY__PORT']}",
            api_key=api_key,
            tenant=tenant,
            initial_credits=INITIAL_CREDITS,
            env=env,
            logs=logs,
            cwd=REPO,
        )
        stacks.append(st)
        # Static membership (as a deployment should run): a restarted process takes its
        # partitions back at once instead of after its dead session expires.
        st.start("worker", "worker", "--tier", "http", env={"SCRAPIFIE_WORKER__INSTANCE_ID": "w1"})
        st.start("router", "router", env={"SCRAPIFIE_WORKER__INSTANCE_ID": "r1"})
        st.start("sink", "sink", env={"SCRAPIFIE_SINK__INSTANCE_ID": "s1"})
        st.start("gateway", "gateway")
        await asyncio.to_thread(st.wait_ready)
        return st

    try:
        yield factory
    finally:
        for st in stacks:
            st.stop_all(timeout_s=10)
            print(st.log_tail())  # shown for failing tests only


def _create_database(pg: LocalPostgres, name: str) -> str:
    with psycopg.connect(pg.superuser_conninfo, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(pg.user)
            )
        )
    return pg.dsn.rsplit("/", 1)[0] + f"/{name}"


# -- figures --------------------------------------------------------------------------------------
@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``record(scenario, **figures)``: printed in the session summary (the recorded figures)."""

    def add(scenario: str, **figures: Any) -> None:
        request.config.stash.setdefault(_FIGURES, []).append({"scenario": scenario, **figures})

    return add


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    figures = config.stash.get(_FIGURES, [])
    if not figures:
        return
    terminalreporter.section("fault tests: figures")
    for row in figures:
        terminalreporter.write_line(json.dumps(row, default=str))
