"""`scrapifie up` SIGKILLed with its whole process group mid-batch (a closed terminal, the OOM
killer): nothing it started survives, the next `up` on the same data dir starts, and every
accepted job ends with exactly one final status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from schemas.records import FINAL_STATUSES
from scrapifie.local.ports import free_port
from scrapifie.local.postgres import LocalPostgres
from scrapifie.local.process import read_pid, runs_as, terminate
from tests.faults.helpers import Submission, final_count, submit, wait_final
from tests.faults.infra import REPO, SlowSite, base_env

pytestmark = pytest.mark.faults

JOBS = 60
SITE_CONCURRENCY = 4  # 60 pages of 0.5-2 s, 4 at a time: ~19 s of fetching


@dataclass
class Up:
    """One data dir and one set of ports; ``start()`` runs ``scrapifie up`` on them as a user
    does from a terminal: a process group of its own (its children share it)."""

    data: Path
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0
    api_key: str = ""

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.env['SCRAPIFIE_GATEWAY__PORT']}"

    @property
    def dsn(self) -> str:
        port = self.env["SCRAPIFIE_POSTGRES__PORT"]
        return f"postgresql://scrapifie:scrapifie@127.0.0.1:{port}/scrapifie"

    def start(self, timeout_s: float = 120) -> float:
        """Start ``up`` and wait until its gateway is ready; returns the seconds it took."""
        self.runs += 1
        started = time.monotonic()
        with self.log.open("ab") as out:
            out.write(f"\n==== up run {self.runs}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "scrapifie", "up"],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"up exited with {self.proc.returncode}\n{self.tail()}")
            try:
                if httpx.get(f"{self.gateway}/readyz", timeout=2, trust_env=False).is_success:
                    self.api_key = (self.data / "api_key").read_text().strip()
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"up not ready within {timeout_s}s\n{self.tail()}")

    def kill_group(self) -> None:
        """SIGKILL ``up``'s whole process group, as the kernel or a closed terminal would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def client(self, api_key: str | None = None, timeout_s: float = 30) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.gateway,
            headers={"Authorization": f"Bearer {api_key or self.api_key}"},
            trust_env=False,
            timeout=timeout_s,
        )

    def verify(self) -> dict[str, Any]:
        """``scrapifie verify --json`` until nothing is pending; the report."""
        deadline = time.monotonic() + 60
        while True:
            proc = subprocess.run(
                [sys.executable, "-m", "scrapifie", "verify", "--json", "--since", "1 hour"],
                env=self.env,
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert proc.returncode in (0, 1), proc.stderr[-3000:]
            report: dict[str, Any] = json.loads(proc.stdout)
            pending = [c["name"] for c in report["checks"] if c["status"] == "pending"]
            if not pending or time.monotonic() > deadline:
                return report
            time.sleep(1)

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _free_port_block(offsets: tuple[int, ...]) -> int:
    """A port P with P + each offset free (``up`` gives its extra workers metrics ports
    ``WORKER_METRICS_PORT + 10 + i``)."""
    while True:
        base = free_port()
        socks = []
        try:
            for off in offsets:
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", base + off))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base


def _processes_of(data: Path) -> set[tuple[int, bytes]]:
    """(pid, start time) of each live process whose environment names ``data`` as its data
    dir: ``up``, every process it started (broker, PostgreSQL and its backends, workers...)."""
    marker = f"SCRAPIFIE_DATA_DIR={data}".encode()
    found = set()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_bytes()
        except OSError:  # exited meanwhile, or a zombie
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] != b"Z":
            found.add((int(entry.name), fields[19]))  # field 22 of stat: start time
    return found


def _cleanup(up: Up) -> None:
    if up.proc is not None and up.proc.poll() is None:
        os.killpg(up.proc.pid, signal.SIGKILL)
        up.proc.wait()
    kafka_dir = up.data / "kafka"
    pid = read_pid(kafka_dir / "kafka.pid")
    props = str(kafka_dir / "server.properties")
    if pid is not None and runs_as(pid, name="java", cwd=kafka_dir, argument=props):
        terminate(pid, 10)
    pg = LocalPostgres(data_dir=up.data / "postgres", port=int(up.env["SCRAPIFIE_POSTGRES__PORT"]))
    pg.destroy()


@pytest.fixture
def up(tmp_path: Path, slow_site: SlowSite) -> Iterator[Up]:
    data = (tmp_path / "data").resolve()
    metrics = _free_port_block((0, 11, 12))
    kafka_port = free_port()
    env = {
        **base_env(),
        "SCRAPIFIE_DATA_DIR": str(data),
        "SCRAPIFIE_LOG_FORMAT": "text",
        "SCRAPIFIE_KAFKA__LOCAL_PORT": str(kafka_port),
        "SCRAPIFIE_KAFKA__LOCAL_CONTROLLER_PORT": str(free_port()),
        "SCRAPIFIE_KAFKA__BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "SCRAPIFIE_POSTGRES__PORT": str(free_port()),
        "SCRAPIFIE_GATEWAY__PORT": str(free_port()),
        "SCRAPIFIE_WORKER_METRICS_PORT": str(metrics),
        "SCRAPIFIE_SINK_METRICS_PORT": str(free_port()),
        "SCRAPIFIE_ROUTER_METRICS_PORT": str(free_port()),
        # Private targets are refused unless listed exactly (SSRF guard).
        "SCRAPIFIE_FETCH__ALLOW_PRIVATE": json.dumps([slow_site.hostport]),
        "SCRAPIFIE_WORKER__SITE_LIMITS": json.dumps(
            {"127.0.0.1": {"rate_per_s": 1000, "concurrency": SITE_CONCURRENCY}}
        ),
        # Straight to the http tier, not through the router: a restarted router cannot recover
        # its table from a non-empty changelog (value_type=dict has no from_data in Faust's
        # decoder), and this scenario is about `up` and the servers it starts.
        "SCRAPIFIE_GATEWAY__DEFAULT_TIER": "http",
    }
    instance = Up(data=data, env=env, log=tmp_path / "up.log")
    try:
        yield instance
    finally:
        _cleanup(instance)
        print(instance.tail())  # shown for failing tests only


async def test_up_sigkilled_mid_batch_restarts_and_finishes_every_job(
    up: Up, slow_site: SlowSite, record: Callable[..., None]
) -> None:
    first_ready_s = await asyncio.to_thread(up.start)
    # Paced so that submission spans the kill: a job whose POST the kill cuts short is retried
    # with the same id (the idempotency key) until the next `up` accepts it.
    urls = [f"{slow_site.base}/slow/{i}" for i in range(JOBS)]
    progress = Submission()
    submitting = asyncio.create_task(submit(up, urls, rate_per_s=6, concurrency=8, out=progress))
    while not await final_count(up.dsn, progress.ids) >= 3:  # mid-batch: a few jobs final
        if submitting.done():
            submitting.result()  # raises what went wrong
        await asyncio.sleep(0.2)

    first_run = _processes_of(up.data)
    broker_pid = read_pid(up.data / "kafka" / "kafka.pid")
    assert broker_pid is not None and first_run
    up.kill_group()
    killed = time.monotonic()

    restart_s = await asyncio.to_thread(up.start)
    left = _processes_of(up.data) & first_run
    assert not left, f"processes of the killed up still running: {sorted(left)}"
    assert broker_pid != read_pid(up.data / "kafka" / "kafka.pid")

    sub = await submitting
    assert not sub.gave_up, sub
    assert len(sub.ids) == JOBS
    done = await wait_final(up.dsn, sub.ids, timeout_s=90)
    async with await psycopg.AsyncConnection.connect(up.dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT status, count(*) FROM jobs WHERE job_id = ANY(%s) GROUP BY status",
            (sub.ids,),
        )
        statuses: dict[str, int] = dict(await cur.fetchall())
    assert sum(statuses.values()) == JOBS and set(statuses) <= FINAL_STATUSES, statuses

    report = await asyncio.to_thread(up.verify)
    broken = {c["name"]: c["examples"] for c in report["checks"] if c["status"] != "ok"}
    assert report["ok"] and not broken, broken
    jobs = report["figures"]["jobs"]
    assert jobs["total"] == jobs["final"] == JOBS, jobs
    assert report["figures"]["attempts"]["duplicates"] == 0

    # A clean stop (SIGTERM; Ctrl-C is handled alike) leaves nothing behind either.
    assert up.proc is not None
    up.proc.terminate()
    await asyncio.to_thread(up.proc.wait, 90)
    assert up.proc.returncode == 0, up.tail()
    assert not _processes_of(up.data)
    record(
        "up SIGKILLed (process group) mid-batch",
        jobs=JOBS,
        statuses=statuses,
        first_ready_s=round(first_ready_s, 1),
        restart_ready_s=round(restart_s, 1),
        all_final_after_kill_s=round(done - killed, 1),
    )
