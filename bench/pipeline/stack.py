"""The pipeline under test: local Kafka and PostgreSQL, topics with a unique prefix, and the
``scrapifie`` processes started exactly as a user starts them, configured only through env."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure.procs import peak_rss_bytes
from connectors.db import migrate
from schemas.kafka import KafkaConfig
from scrapifie.admin import add_tenant, ensure_topics
from scrapifie.local.kafka import LocalKafka
from scrapifie.local.ports import free_port
from scrapifie.local.postgres import LocalPostgres
from scrapifie.testing import procstack
from streams.config import FetchConfig, WorkerConfig

REPO = Path(__file__).resolve().parents[2]


def target_env(hosts: list[str], *ports: int) -> dict[str, str]:
    """Settings that let the worker fetch our local targets as fast as it can.

    * The SSRF guard refuses private and loopback targets unless listed exactly (host:port).
    * Per-site limits (default 4/s, 4 at once) would make the bench measure the politeness
      policy, not the pipeline; as for Scrapy here (no download delay, per-domain concurrency =
      total), they are lifted for our own sites. robots.txt stays honoured (nginx answers 404:
      no restrictions; one fetch per site, cached).
    Each setting is added only if the worker's config has the field, so the bench also runs
    against older or newer trees.
    """
    env: dict[str, str] = {}
    if "allow_private" in FetchConfig.model_fields:
        allowed = [f"{h}:{port}" for port in ports for h in hosts]
        env["SCRAPIFIE_FETCH__ALLOW_PRIVATE"] = json.dumps(allowed)
    if "site_limits" in WorkerConfig.model_fields:
        unlimited = {"rate_per_s": 1_000_000, "concurrency": 100_000}
        env["SCRAPIFIE_WORKER__SITE_LIMITS"] = json.dumps(dict.fromkeys(hosts, unlimited))
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    peak_rss_bytes: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return procstack.tail(self.log, lines)


@dataclass
class BenchStack:
    """Kafka + PostgreSQL for the whole run; worker and sink processes started per phase."""

    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. target_env(...)
    kafka: LocalKafka | None = None
    postgres: LocalPostgres | None = None
    procs: list[Proc] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def dsn(self) -> str:
        assert self.postgres is not None
        return self.postgres.dsn

    @property
    def bootstrap(self) -> str:
        assert self.kafka is not None
        return self.kafka.bootstrap

    @property
    def kafka_pid(self) -> int | None:
        return self.kafka.pid if self.kafka is not None else None

    @property
    def postgres_pid(self) -> int | None:
        return self.postgres.pid if self.postgres is not None else None

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        self.kafka = LocalKafka(
            data_dir=self.workdir / "kafka",
            port=free_port(),
            controller_port=free_port(),
            pom=REPO / "deploy" / "kafka" / "pom.xml",
            log_file=self.logs / "kafka.log",
            heap="1g",
        )
        self.postgres = LocalPostgres(
            data_dir=self.workdir / "postgres",
            port=free_port(),
            log_file=self.logs / "postgres.log",
        )
        self.kafka.start()
        self.postgres.start()
        asyncio.run(migrate(self.dsn))

    def kafka_config(self, prefix: str) -> KafkaConfig:
        return KafkaConfig(bootstrap=self.bootstrap, topic_prefix=prefix)

    async def new_prefix(self, tag: str) -> str:
        """A fresh topic prefix whose topics exist."""
        prefix = f"b{uuid.uuid4().hex[:6]}-{tag}."
        await ensure_topics(self.kafka_config(prefix))
        return prefix

    async def add_tenant(self, tenant: str) -> None:
        """A tenant with ample credits (the ledger sink charges credits per attempt)."""
        await add_tenant(self.dsn, tenant, 10**12, api_key=f"key-{tenant}-{uuid.uuid4().hex}")

    def env(self, prefix: str, **settings: str) -> dict[str, str]:
        """The processes' environment: ours replaces every inherited SCRAPIFIE_ variable."""
        data = self.workdir / "data"
        return {
            **procstack.base_env(),
            "SCRAPIFIE_DATA_DIR": str(data),
            "SCRAPIFIE_KAFKA__BOOTSTRAP": self.bootstrap,
            "SCRAPIFIE_KAFKA__TOPIC_PREFIX": prefix,
            "SCRAPIFIE_POSTGRES__DSN": self.dsn,
            "SCRAPIFIE_STORAGE__BACKEND": "local",
            "SCRAPIFIE_STORAGE__ROOT": str(data / "objects"),
            "SCRAPIFIE_WORKER_METRICS_PORT": str(free_port()),
            "SCRAPIFIE_SINK_METRICS_PORT": str(free_port()),
            **self.extra_env,
            **settings,
        }

    def spawn(
        self, name: str, args: list[str], env: dict[str, str], wrapper: list[str] | None = None
    ) -> Proc:
        """Start ``python [wrapper...] -m scrapifie <args>`` with ``env``; output to a log file."""
        path = self.logs / f"{name}.log"
        popen = procstack.spawn(args, env=env, log=path, cwd=REPO, wrapper=wrapper or ())
        proc = Proc(name, popen, path)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout_s: float = 30.0) -> Proc:
        """SIGTERM (then SIGKILL), after recording the process's peak RSS."""
        if proc.alive():
            proc.peak_rss_bytes = peak_rss_bytes(proc.pid)
        procstack.stop(proc.popen, timeout_s=timeout_s)
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)
        return proc

    def close(self) -> None:
        for proc in list(self.procs):
            self.stop(proc, timeout_s=15)
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.stop()
            with contextlib.suppress(Exception):
                self.postgres.destroy()
        if self.kafka is not None:
            with contextlib.suppress(Exception):
                self.kafka.stop()
