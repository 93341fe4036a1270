"""The real stack for integration tests: Kafka (KRaft, from Maven jars), PostgreSQL, an S3 API
endpoint (moto's server on 127.0.0.1), a local target site, and the scrapifie processes started
as subprocesses exactly as a user starts them. One stack per test session, one topic prefix."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from connectors.db import migrate
from schemas.kafka import KafkaConfig
from scrapifie.admin import add_tenant, ensure_topics
from scrapifie.local.kafka import LocalKafka
from scrapifie.local.ports import free_port
from scrapifie.local.postgres import LocalPostgres
from scrapifie.testing.procstack import ProcStack, base_env
from tests.integration.targets import TargetSite
from tests.services import started_kafka, started_postgres

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    with started_kafka(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    with started_postgres(tmp_path_factory.mktemp("pg") / "cluster") as db:
        yield db


@dataclass
class S3Endpoint:
    url: str
    bucket: str = "scrapifie-test"
    key_id: str = "testing"
    secret: str = "testing"

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
        )


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Endpoint]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield S3Endpoint(f"http://127.0.0.1:{port}")
    server.stop()


@pytest.fixture(scope="session")
def target() -> Iterator[TargetSite]:
    with TargetSite() as site:
        yield site


@dataclass(kw_only=True)
class Stack(ProcStack):
    """The pipeline's processes (``ProcStack``: ``start``, ``stop``, ``procs``, ``env``,
    ``log_tail``...) with what a test needs to talk to them."""

    kafka: KafkaConfig
    dsn: str
    gateway: str
    api_key: str
    s3: S3Endpoint
    tenant: str = ""

    def log_tail(self, lines: int = 60) -> str:
        return super().log_tail(lines)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.gateway,
            headers={"Authorization": f"Bearer {self.api_key}"},
            trust_env=False,
            timeout=30,
        )


@contextmanager
def running_stack(
    kafka: LocalKafka,
    postgres: LocalPostgres,
    s3: S3Endpoint,
    tmp: Path,
    allow_private: list[str],
    extra_env: dict[str, str] | None = None,
    tiers: tuple[str, ...] = ("http",),
) -> Iterator[Stack]:
    """A worker, the sinks and the gateway on a fresh topic prefix, configured only through
    the environment, exactly as a user runs them."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    cfg = KafkaConfig(bootstrap=kafka.bootstrap, topic_prefix=prefix)
    (tmp / "data").mkdir(parents=True)
    (tmp / "logs").mkdir()
    gw_port = free_port()
    env = {
        **base_env(),
        "SCRAPIFIE_DATA_DIR": str(tmp / "data"),
        "SCRAPIFIE_LOG_FORMAT": "text",
        "SCRAPIFIE_KAFKA__BOOTSTRAP": kafka.bootstrap,
        "SCRAPIFIE_KAFKA__TOPIC_PREFIX": prefix,
        "SCRAPIFIE_POSTGRES__DSN": postgres.dsn,
        "SCRAPIFIE_STORAGE__BACKEND": "s3",
        "SCRAPIFIE_STORAGE__S3_ENDPOINT_URL": s3.url,
        "SCRAPIFIE_STORAGE__S3_BUCKET": s3.bucket,
        "SCRAPIFIE_STORAGE__S3_ACCESS_KEY_ID": s3.key_id,
        "SCRAPIFIE_STORAGE__S3_SECRET_ACCESS_KEY": s3.secret,
        "SCRAPIFIE_GATEWAY__PORT": str(gw_port),
        "SCRAPIFIE_WORKER_METRICS_PORT": str(free_port()),
        "SCRAPIFIE_SINK_METRICS_PORT": str(free_port()),
        "SCRAPIFIE_ROUTER_METRICS_PORT": str(free_port()),
        "SCRAPIFIE_GATEWAY__TIERS": json.dumps(list(tiers)),
        # Tests submit in bursts: the per-tenant rate is lifted (test_accounts.py sets its own).
        "SCRAPIFIE_GATEWAY__RATE_PER_S": "100000",
        # Private targets are refused unless listed exactly (SSRF guard).
        "SCRAPIFIE_FETCH__ALLOW_PRIVATE": json.dumps(allow_private),
        **(extra_env or {}),
    }

    async def prepare() -> str:
        await ensure_topics(cfg)
        await migrate(postgres.dsn)
        return await add_tenant(postgres.dsn, f"acme-{prefix.rstrip('.')}", 1_000_000)

    # A thread of its own: callers may be async tests with a running loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        api_key = pool.submit(asyncio.run, prepare()).result()
    st = Stack(
        env=env,
        logs=tmp / "logs",
        cwd=REPO,
        kafka=cfg,
        dsn=postgres.dsn,
        gateway=f"http://127.0.0.1:{gw_port}",
        api_key=api_key,
        s3=s3,
        tenant=f"acme-{prefix.rstrip('.')}",
    )
    for tier in tiers:
        name = "worker" if tier == "http" else f"worker-{tier}"
        port = env["SCRAPIFIE_WORKER_METRICS_PORT"] if tier == "http" else str(free_port())
        st.start(name, "worker", "--tier", tier, env={"SCRAPIFIE_WORKER_METRICS_PORT": port})
    st.start("router", "router")
    st.start("sink", "sink")
    st.start("gateway", "gateway")
    try:
        st.wait_for(f"{st.gateway}/readyz", timeout_s=60)
        yield st
    except BaseException:
        print(st.log_tail())
        raise
    finally:
        st.stop_all()


@pytest.fixture(scope="session")
def stack(
    kafka: LocalKafka,
    postgres: LocalPostgres,
    s3: S3Endpoint,
    target: TargetSite,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    site = target.base.removeprefix("http://")
    # The local target is fast: lift the polite per-site default (4/s) for it.
    limits = {"127.0.0.1": {"rate_per_s": 100000, "concurrency": 64}}
    with running_stack(
        kafka,
        postgres,
        s3,
        tmp_path_factory.mktemp("stack"),
        [site],
        {
            "SCRAPIFIE_WORKER__SITE_LIMITS": json.dumps(limits),
            # Short backoff keeps retries in the 5 s delay topic.
            "SCRAPIFIE_WORKER__RETRY_BASE_DELAY_S": "0.5",
            # Extraction rules past this are stopped (test_formats.py has one that never ends).
            "SCRAPIFIE_WORKER__EXTRACT_TIMEOUT_S": "3",
        },
    ) as st:
        yield st
