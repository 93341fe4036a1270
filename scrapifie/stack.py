"""`scrapifie up`: the whole local stack in the foreground.

Order: Kafka broker and PostgreSQL (local, under the data dir) → topics, migrations, a default
tenant → worker(s), sinks and gateway as child processes. Ctrl-C (or SIGTERM, or SIGHUP from a
closed terminal) stops the children first, then the database and the broker, so nothing is left
running. If this process is killed outright (SIGKILL, the OOM killer), the kernel signals every
one of them (``scrapifie.local.process.parent_death_signal``), and the next ``up`` stops a broker
or database still running on the data dir before starting its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from connectors.db import migrate
from scrapifie.admin import add_tenant, ensure_topics, list_tenants
from scrapifie.local.kafka import LocalKafka
from scrapifie.local.postgres import LocalPostgres
from scrapifie.local.process import parent_death_signal
from scrapifie.settings import Settings

log = logging.getLogger(__name__)


def run_stack(settings: Settings, repo_root: Path, workers: int) -> int:
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    (data / "logs").mkdir(exist_ok=True)
    kafka = LocalKafka(
        data_dir=data / "kafka",
        port=settings.kafka.local_port,
        controller_port=settings.kafka.local_controller_port,
        pom=repo_root / "deploy" / "kafka" / "pom.xml",
        log_file=data / "logs" / "kafka.log",
    )
    postgres = LocalPostgres(
        data_dir=data / "postgres",
        port=settings.postgres.port,
        log_file=data / "logs" / "postgres.log",
    )
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        log.info("starting Kafka on %s", settings.kafka.bootstrap)
        kafka.start()
        if settings.postgres.dsn is None:
            log.info("starting PostgreSQL on 127.0.0.1:%d", settings.postgres.port)
            postgres.start()
        asyncio.run(_prepare(settings, data))
        env = {**os.environ, "SCRAPIFIE_DATA_DIR": str(data)}
        commands = [
            *[["worker", "--tier", "http"]] * workers,
            ["worker", "--tier", "browser"],
            ["worker", "--tier", "stealth"],
            ["router"],
            ["sink"],
            ["gateway"],
        ]
        for i, cmd in enumerate(commands):
            child_env = dict(env)
            # Static group membership: after a crash and restart (same command line) a process
            # takes its partitions back at once rather than after its old session expires.
            member = f"{socket.gethostname()}-{'-'.join(cmd).replace('--tier-', '')}-{i}"
            child_env["SCRAPIFIE_WORKER__INSTANCE_ID"] = member
            child_env["SCRAPIFIE_SINK__INSTANCE_ID"] = member
            if cmd[0] == "worker" and i > 0:  # one metrics port per worker process
                child_env["SCRAPIFIE_WORKER_METRICS_PORT"] = str(
                    settings.worker_metrics_port + 10 + i
                )
            # The children share our process group (Ctrl-C reaches them too); the parent-death
            # signal covers a SIGKILL of this process alone.
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "scrapifie", *cmd],
                    env=child_env,
                    preexec_fn=parent_death_signal(signal.SIGTERM),  # noqa: PLW1509
                )
            )
        _wait_for_gateway(settings, children)
        log.info(
            "ready: gateway http://%s:%d  (API key in %s)",
            settings.gateway.host,
            settings.gateway.port,
            data / "api_key",
        )
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    log.error("%s exited with %s; stopping the stack", child.args, child.returncode)
                    stopping = True
            time.sleep(0.5)
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        postgres.stop()
        kafka.stop()
        log.info("stopped")


async def _prepare(settings: Settings, data: Path) -> None:
    created = await ensure_topics(settings.kafka)
    if created:
        log.info("created topics: %s", ", ".join(created))
    await migrate(settings.dsn())
    key_file = data / "api_key"
    if not await list_tenants(settings.dsn()) or not key_file.exists():
        key = await add_tenant(settings.dsn(), "default", 1_000_000)
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
        log.info("created tenant 'default'; its API key is in %s", key_file)


def _wait_for_gateway(settings: Settings, children: list[subprocess.Popen[bytes]]) -> None:
    """Block until the gateway answers /readyz (Kafka and PostgreSQL reachable)."""
    import httpx

    url = f"http://{settings.gateway.host}:{settings.gateway.port}/readyz"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(c.poll() is not None for c in children):
            return  # the supervisor loop reports which one exited
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    log.warning("gateway not ready after 120 s; see the logs above")
