"""The sinks alone: events/s into PostgreSQL and into object storage from pre-filled topics.

The topics of a fresh prefix are filled while no sink runs; then ``python -m scrapifie sink`` is
started and the rows are counted every 50 ms. A rate runs from the first poll that sees rows to
the first that sees them all (rows already there at the first sighting are not counted), so
process start-up and the consumer joining its group are left out.

* ``postgres``: N ScrapeResult events without content (failed fetches: a job row each) and N
  Metering events (an attempt row each, credits charged) on their topics at once.
* ``objects``: M ScrapeResult events carrying a gzipped page: an object then a job row each.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer

from bench.measure.procs import CpuMeter
from bench.measure.profile import (
    PySpy,
    load_pyinstrument,
    load_pyspy,
    pyinstrument_wrapper,
    summarize,
)
from bench.measure.progress import Progress
from bench.pipeline.driver import count_files
from bench.pipeline.stack import REPO, BenchStack
from schemas import Codec, ErrorCode, Tier, derived_id
from schemas.kafka import KafkaConfig, producer_kwargs
from schemas.records import FINAL_STATUSES, AttemptOutcome, JobStatus, Metering, ScrapeResult


def _result(tenant: str, url: str, body: bytes | None, gz: bytes | None) -> ScrapeResult:
    job_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    ok = body is not None
    return ScrapeResult(
        event_id=derived_id(tenant, job_id, "result", "http", "1"),
        job_id=job_id,
        tenant=tenant,
        url=url,
        final_url=url,
        tier=Tier.HTTP,
        attempts=1,
        status=JobStatus.SUCCEEDED if ok else JobStatus.FAILED,
        error_code=None if ok else ErrorCode.HTTP_ERROR,
        error_message=None if ok else "HTTP 404",
        http_status=200 if ok else 404,
        content_type="text/html",
        content_encoding="gzip",
        content=gz,
        content_bytes=len(body) if body is not None else 0,
        content_sha256=hashlib.sha256(body).hexdigest() if body is not None else None,
        response_headers={"content-type": "text/html", "server": "nginx"},
        screenshot=None,
        created_at=now,
        finished_at=now,
        duration_ms=3,
        trace_id=job_id,
    )


def _metering(result: ScrapeResult) -> Metering:
    ok = result.status == JobStatus.SUCCEEDED
    return Metering(
        event_id=derived_id(result.tenant, result.job_id, "metering", "http", "1"),
        job_id=result.job_id,
        tenant=result.tenant,
        tier=Tier.HTTP,
        attempt=1,
        outcome=AttemptOutcome.OK if ok else AttemptOutcome.FATAL,
        error_code=result.error_code,
        http_status=result.http_status,
        bytes=result.content_bytes,
        duration_ms=3,
        credits=1 if ok else 0,
        created_at=result.created_at,
        trace_id=result.trace_id,
    )


async def prefill(
    kafka: KafkaConfig, records: Iterator[tuple[str, bytes, bytes]], total: int, progress: Progress
) -> float:
    """Produce (topic, key, value) records with a batching producer; returns the seconds taken."""
    kwargs = {**producer_kwargs(kafka, "bench-prefill"), "linger_ms": 20}
    t0 = time.monotonic()
    async with AIOKafkaProducer(**kwargs) as producer:
        pending = []
        for i, (topic, key, value) in enumerate(records, 1):
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
                progress.update(i, total, "events produced")
        await asyncio.gather(*pending)
    return time.monotonic() - t0


async def _count(conn: psycopg.AsyncConnection[Any], sql: str, tenant: str) -> int:
    cur = await conn.execute(sql, {"tenant": tenant, "final": list(FINAL_STATUSES)})
    row = await cur.fetchone()
    return int(row[0]) if row else 0


_JOBS = "SELECT count(*) FROM jobs WHERE tenant_id = %(tenant)s AND status = ANY(%(final)s)"
_ATTEMPTS = "SELECT count(*) FROM attempts WHERE tenant_id = %(tenant)s"


async def _run_sink(
    stack: BenchStack,
    prefix: str,
    tenant: str,
    expect: dict[str, int],
    progress: Progress,
    timeout_s: float,
    profiler: str | None = None,
    profile_stem: Path | None = None,
) -> dict[str, Any]:
    """Start the sink process, time the rows of ``tenant`` until ``expect`` is met, stop it.
    With a profiler, the sink runs under it (pyinstrument) or has py-spy attached."""
    profile_file: Path | None = None
    wrapper = None
    if profiler and profile_stem is not None:
        suffix = ".pyisession" if profiler == "pyinstrument" else "-pyspy.txt"
        profile_file = profile_stem.with_name(profile_stem.name + suffix)
        if profiler == "pyinstrument":
            wrapper = pyinstrument_wrapper(profile_file)
    sink = stack.spawn(f"sink-alone-{tenant}", ["sink"], stack.env(prefix), wrapper)
    spy = PySpy(sink.pid, profile_file) if profiler == "py-spy" and profile_file else None
    meter = CpuMeter({"sink": sink.pid, "postgres": stack.postgres_pid, "kafka": stack.kafka_pid})
    queries = {"jobs": _JOBS, "attempts": _ATTEMPTS}
    first: dict[str, tuple[float, int]] = {}
    done: dict[str, float] = {}
    total = sum(expect.values())
    deadline = time.monotonic() + timeout_s
    async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
        while len(done) < len(expect) and time.monotonic() < deadline:
            if not sink.alive():
                raise RuntimeError(f"sink exited with {sink.popen.returncode}\n{sink.log_tail()}")
            got = 0
            for table, n in expect.items():
                if table in done:
                    got += n
                    continue
                count = await _count(conn, queries[table], tenant)
                now = time.monotonic()
                got += count
                if count and table not in first:
                    first[table] = (now, count)
                    if len(first) == 1:
                        meter.start()
                if count >= n:
                    done[table] = now
            progress.update(got, total, "rows")
            await asyncio.sleep(0.05)
    cpu = meter.stop() if first else {}
    if spy is not None:
        await asyncio.to_thread(spy.stop)
    await asyncio.to_thread(stack.stop, sink)
    out: dict[str, Any] = {
        "tenant": tenant,
        "expected": expect,
        "complete": len(done) == len(expect),
    }
    for table, n in expect.items():
        if table in first and table in done:
            t0, c0 = first[table]
            out[f"{table}_rows_per_s"] = round((n - c0) / max(done[table] - t0, 1e-9), 1)
    if first and len(done) == len(expect):
        t0 = min(t for t, _ in first.values())
        c0 = sum(c for _, c in first.values())
        out["events_per_s"] = round((total - c0) / max(max(done.values()) - t0, 1e-9), 1)
        out["seconds"] = round(max(done.values()) - t0, 3)
    out["cpu_pct"] = cpu
    out["sink_peak_rss_bytes"] = sink.peak_rss_bytes
    if profiler and profile_file is not None and profile_file.exists():
        stacks = (
            load_pyinstrument(profile_file)
            if profiler == "pyinstrument"
            else load_pyspy(profile_file)
        )
        out["profile"] = {
            "profiler": profiler,
            "profile_file": str(profile_file),
            "summary": summarize(stacks, REPO),
        }
    return out


async def run_sinks_alone(
    stack: BenchStack,
    corpus_root: Path,
    pg_events: int,
    object_events: int,
    progress: Progress,
    profiler: str | None = None,
    profile_stem: Path | None = None,
) -> dict[str, Any]:
    codec = Codec()
    prefix = await stack.new_prefix("sinks")
    kafka = stack.kafka_config(prefix)
    topics = kafka.topics
    out: dict[str, Any] = {"prefix": prefix}

    # PostgreSQL: job rows (results without content) and attempt rows (metering) together.
    tenant = "bench-sink-pg"
    await stack.add_tenant(tenant)

    def pg_records() -> Iterator[tuple[str, bytes, bytes]]:
        for i in range(pg_events):
            r = _result(tenant, f"http://127.0.0.{2 + i % 5}/missing/{i}", None, None)
            key = r.job_id.encode()
            yield topics.results, key, codec.write(r)
            yield topics.metering, key, codec.write(_metering(r))

    progress.phase(f"sinks alone: pre-filling {2 * pg_events:,} events (results + metering)")
    produce_s = await prefill(kafka, pg_records(), 2 * pg_events, progress)
    progress.phase("sinks alone: PostgreSQL")
    pg = await _run_sink(
        stack,
        prefix,
        tenant,
        {"jobs": pg_events, "attempts": pg_events},
        progress,
        300,
        profiler,
        profile_stem,
    )
    pg["prefill_seconds"] = round(produce_s, 2)
    out["postgres"] = pg

    # Object storage: results with content (object, then row).
    tenant = "bench-sink-obj"
    await stack.add_tenant(tenant)
    pages = sorted((corpus_root / "p").iterdir())[:64]
    bodies = [(p.read_bytes(), gzip.compress(p.read_bytes(), 5, mtime=0)) for p in pages]

    def obj_records() -> Iterator[tuple[str, bytes, bytes]]:
        for i in range(object_events):
            body, gz = bodies[i % len(bodies)]
            r = _result(tenant, f"http://127.0.0.{2 + i % 5}/p/{i}.html", body, gz)
            yield topics.results, r.job_id.encode(), codec.write(r)

    progress.phase(f"sinks alone: pre-filling {object_events:,} results with content")
    produce_s = await prefill(kafka, obj_records(), object_events, progress)
    progress.phase("sinks alone: object storage (+ job rows)")
    obj = await _run_sink(stack, prefix, tenant, {"jobs": object_events}, progress, 300)
    obj["prefill_seconds"] = round(produce_s, 2)
    obj["objects"] = count_files(stack.workdir / "data" / "objects" / "content" / tenant)
    obj["mean_object_bytes"] = round(sum(len(g) for _, g in bodies) / len(bodies))
    out["objects"] = obj
    return out
