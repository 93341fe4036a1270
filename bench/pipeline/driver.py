"""The bench's Kafka client for the http tier: produces ScrapeRequest records straight to a tier
topic and times each job's first record on ``scrape.results`` (by its key, the job id) and its
final row in PostgreSQL. Clocks and intervals: see :mod:`bench.pipeline.e2e`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.measure.progress import Progress
from bench.measure.stats import rate, summary_ms
from bench.pipeline.stack import Proc
from schemas import Codec, site_key
from schemas.kafka import KafkaConfig, producer_kwargs
from schemas.records import FINAL_STATUSES, FetchOptions, JobStatus, ScrapeRequest


@dataclass
class Batch:
    """Jobs of one phase: a tenant of their own, submit and arrival times by job id."""

    tenant: str
    submitted: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)


def encode_request(
    codec: Codec,
    url: str,
    tenant: str,
    tier: str,
    max_tier: str,
    formats: list[str] | None = None,
) -> tuple[str, bytes]:
    """A new job for ``url``: its id and its ScrapeRequest record (Avro)."""
    job_id = str(uuid.uuid4())
    job = ScrapeRequest(
        job_id=job_id,
        tenant=tenant,
        url=url,
        tier=tier,
        max_tier=max_tier,
        options=FetchOptions(formats=formats) if formats else FetchOptions(),
        created_at=datetime.now(UTC),
        trace_id=job_id,
    )
    return job_id, codec.write(job)


class Driver:
    """Produces jobs to a tier topic and watches their results; an async context manager."""

    tier = "http"
    max_tier = "stealth"  # the schema's default: a blocked page may escalate

    def __init__(self, kafka: KafkaConfig, dsn: str, progress: Progress) -> None:
        self.kafka = kafka
        self.watch: list[Proc] = []  # processes that must stay alive while we wait
        self.formats: list[str] | None = None  # options.formats of the jobs submitted
        self.dsn = dsn
        self.progress = progress
        self.codec = Codec()
        self.arrived: dict[str, float] = {}
        self.emitted: dict[str, float] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._producer = AIOKafkaProducer(**producer_kwargs(kafka, "bench"))
        self._consumer = AIOKafkaConsumer(
            kafka.topics.results,
            bootstrap_servers=kafka.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            # aiokafka's default. A fetch returns as soon as a result arrives (min bytes 1), so
            # this bounds only idle polls: at 50 ms the bench's consumer and the broker did
            # ~20 empty fetches a second, which the browser rounds (~10 results/s) paid for.
            # Measured the same day, low-load submit → result received p50: 11 ms at 50, 12 at 500.
            fetch_max_wait_ms=500,
            max_partition_fetch_bytes=kafka.max_message_bytes + 65536,
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Driver:
        await self._producer.start()
        await self._consumer.start()
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()
        await self._producer.stop()

    async def _watch(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            now = time.time()
            for msgs in batches.values():
                for m in msgs:
                    job_id = (m.key or b"").decode()
                    if job_id in self.arrived:
                        continue
                    self.arrived[job_id] = now
                    self.emitted[job_id] = m.timestamp / 1000
                    self._on_result(job_id, m)
                    fut = self._waiters.pop(job_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(now)

    def _on_result(self, job_id: str, message: Any) -> None:
        """Called once per job's first result record (subclasses keep what they need)."""

    def _request(self, url: str, tenant: str) -> tuple[str, bytes]:
        return encode_request(self.codec, url, tenant, self.tier, self.max_tier, self.formats)

    async def submit_many(self, urls: list[str], tenant: str) -> Batch:
        """Produce one job per URL as fast as the producer takes them."""
        batch = Batch(tenant)
        topic = self.kafka.topics.tier(self.tier)
        futures = []
        for url in urls:
            job_id, value = self._request(url, tenant)
            batch.submitted[job_id] = time.time()
            futures.append(await self._producer.send(topic, value, key=site_key(url).encode()))
        await asyncio.gather(*futures)
        done = time.time()
        batch.acked = dict.fromkeys(batch.submitted, done)
        return batch

    async def submit_one_and_wait(self, url: str, batch: Batch, timeout_s: float) -> None:
        job_id, value = self._request(url, batch.tenant)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters[job_id] = fut
        batch.submitted[job_id] = time.time()
        await self._producer.send_and_wait(
            self.kafka.topics.tier("http"), value, key=site_key(url).encode()
        )
        batch.acked[job_id] = time.time()
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            self._waiters.pop(job_id, None)

    def _check_alive(self) -> None:
        for proc in self.watch:
            if not proc.alive():
                raise RuntimeError(
                    f"{proc.name} exited with {proc.popen.returncode}; log tail:\n"
                    + proc.log_tail(15)
                )

    async def wait_results(self, batch: Batch, timeout_s: float) -> int:
        """Wait until every job of ``batch`` has a result (or timeout); returns how many do."""
        deadline = time.monotonic() + timeout_s
        missing = set(batch.submitted)
        while True:
            self._check_alive()
            missing = {j for j in missing if j not in self.arrived}
            got = len(batch.submitted) - len(missing)
            self.progress.update(got, len(batch.submitted), "results")
            if not missing or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.02)

    async def wait_rows(self, batch: Batch, timeout_s: float) -> dict[str, tuple[str, float]]:
        """Wait until every job of ``batch`` has a final row; returns status and row time."""
        deadline = time.monotonic() + timeout_s
        n = len(batch.submitted)
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            while True:
                self._check_alive()
                cur = await conn.execute(
                    "SELECT count(*) FROM jobs WHERE tenant_id = %s AND status = ANY(%s)",
                    (batch.tenant, list(FINAL_STATUSES)),
                )
                row = await cur.fetchone()
                got = int(row[0]) if row else 0
                self.progress.update(got, n, "rows")
                if got >= n or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            cur = await conn.execute(
                "SELECT job_id, status, extract(epoch FROM updated_at)::float8 FROM jobs"
                " WHERE tenant_id = %s AND status = ANY(%s)",
                (batch.tenant, list(FINAL_STATUSES)),
            )
            return {r[0]: (r[1], float(r[2])) for r in await cur.fetchall()}

    def report(
        self, batch: Batch, rows: dict[str, tuple[str, float]], objects_root: Path | None
    ) -> dict[str, Any]:
        jobs = list(batch.submitted)
        first = min(batch.submitted.values())
        arrived = [self.arrived[j] for j in jobs if j in self.arrived]
        to_result = [self.arrived[j] - batch.submitted[j] for j in jobs if j in self.arrived]
        emitted = [self.emitted[j] - batch.submitted[j] for j in jobs if j in self.emitted]
        to_ack = [batch.acked[j] - batch.submitted[j] for j in jobs if j in batch.acked]
        to_row = [rows[j][1] - batch.submitted[j] for j in jobs if j in rows]
        statuses = [rows[j][0] for j in jobs if j in rows]
        out: dict[str, Any] = {
            "tenant": batch.tenant,
            "jobs": len(jobs),
            "results": len(arrived),
            "rows": len(to_row),
            "succeeded": statuses.count(JobStatus.SUCCEEDED),
            "failed": statuses.count(JobStatus.FAILED),
            "complete": len(arrived) == len(jobs) and len(to_row) == len(jobs),
            "submit_seconds": round(max(batch.submitted.values()) - first, 3),
            "submit_to_ack_ms": summary_ms(to_ack),
            "submit_to_result_ms": summary_ms(to_result),
            "submit_to_emitted_ms": summary_ms(emitted),
            "submit_to_row_ms": summary_ms(to_row),
        }
        if arrived:
            out["result_pages_per_s"] = rate(len(arrived), max(arrived) - first)
            s = sorted(arrived)
            lo, hi = s[len(s) // 10], s[(len(s) * 9) // 10]
            out["result_pages_per_s_steady"] = rate(len(s) * 8 // 10, hi - lo)
        if to_row:
            out["row_pages_per_s"] = rate(len(to_row), max(rows[j][1] for j in rows) - first)
        if objects_root is not None:
            out["objects"] = count_files(objects_root / "content" / batch.tenant)
        return out


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))
