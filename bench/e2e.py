"""The http tier end to end: jobs produced to Kafka → results on ``scrape.results`` → rows in
PostgreSQL and objects stored.

Clocks: every time here is wall-clock (``time.time()``) on this machine.

* submit: just before the ScrapeRequest is handed to the producer (the project's own producer
  settings, ``schemas.kafka.producer_kwargs``: idempotent, acks=all, linger 1 ms);
* result: when our plain aiokafka consumer of ``scrape.results`` receives the record (the
  record's CreateTime, stamped by the worker's producer, is kept as ``emitted``);
* row: the job row's ``updated_at`` (PostgreSQL ``now()``, the start of the sink's upsert
  transaction, a few ms before it commits), read once all rows are final.
"""

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

from bench.procs import CpuMeter, jit_cpu_seconds
from bench.profile import (
    PySpy,
    load_pyinstrument,
    load_pyspy,
    pyinstrument_html,
    pyinstrument_wrapper,
    pyspy_binary,
    summarize,
)
from bench.progress import Progress
from bench.stack import REPO, BenchStack, Proc
from bench.stats import rate, summary_ms
from bench.target import SLOW_RATE_KIB
from schemas import Codec, site_key
from schemas.kafka import KafkaConfig, producer_kwargs
from schemas.records import FINAL_STATUSES, FetchOptions, JobStatus, ScrapeRequest
from scrapifie.local.ports import free_port

WARMUP_TIMEOUT_S = 120.0  # includes the worker's start-up and joining its consumer group
# A broker in production has long compiled its hot paths; a fresh one spends up to half of its
# CPU in the JIT compiler for the first ~10,000 jobs, which a measurement would charge to us.
JIT_QUIET_SHARE = 0.05  # of one core, over a pass of the corpus
BROKER_WARMUP_MAX_S = 120.0


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


async def scrape_gauges(session: Any, port: int) -> dict[str, float]:
    """A process's Prometheus samples by series (``name{labels}``); empty if it did not answer."""
    import aiohttp

    samples: dict[str, float] = {}
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line and not line.startswith("#"):
                    series, _, value = line.rpartition(" ")
                    samples[series] = float(value)
    return samples


async def wait_assigned(
    ports: list[int], topic: str, partitions: int, timeout_s: float = 90.0
) -> list[int]:
    """Wait until the workers behind ``ports`` own all ``partitions`` of ``topic`` between them,
    each at least one (their ``scrapifie_assigned_partitions`` gauges); returns each worker's
    count. Raises after ``timeout_s``: a round on part of the workers would measure that."""
    import aiohttp

    series = f'scrapifie_assigned_partitions{{topic="{topic}"}}'
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            counts = [int((await scrape_gauges(session, p)).get(series, 0)) for p in ports]
            if sum(counts) == partitions and all(counts):
                return counts
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"workers own {counts} partitions of {topic} after {timeout_s:g}s "
                    f"(expected {partitions} between them, each at least one)"
                )
            await asyncio.sleep(0.2)


class InFlightSampler:
    """Samples the worker's ``scrapifie_fetches_in_flight`` and ``scrapifie_jobs_in_progress``
    gauges from its /metrics endpoint (every 0.5 s: rendering the metrics costs the worker CPU
    too). Fetches are the fetch step alone; jobs include waiting for Kafka's acknowledgement."""

    def __init__(self, port: int, interval_s: float = 0.5) -> None:
        self.port = port
        self.interval_s = interval_s
        self.samples: list[float] = []
        self.jobs: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                for series, value in (await scrape_gauges(session, self.port)).items():
                    if series.startswith("scrapifie_fetches_in_flight{"):
                        self.samples.append(value)
                    elif series.startswith("scrapifie_jobs_in_progress{"):
                        self.jobs.append(value)
                await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.samples:
            return {}
        busy = [s for s in self.samples if s > 0] or [0.0]
        jobs = [s for s in self.jobs if s > 0] or [0.0]
        return {
            "max": max(self.samples),
            "mean_while_busy": round(sum(busy) / len(busy), 1),
            "jobs_max": max(jobs),
            "jobs_mean_while_busy": round(sum(jobs) / len(jobs), 1),
        }


@dataclass
class E2EPlan:
    in_flight: list[int]  # worker max_in_flight per round; the first round also measures latency
    warmup_jobs: int
    latency_jobs: int
    timeout_s: float
    profiler: str | None  # "py-spy", "pyinstrument" or None
    profile_stem: Path  # profile files: <stem>-pyspy.txt or <stem>.pyisession (+ .html)
    nginx_pid: int | None
    workers: list[int] = field(default_factory=lambda: [1])  # >1: a round more at in_flight[0]
    # A round more at max_in_flight=200 over these URLs (the slow server): memory with 200
    # fetches really in flight.
    memory_urls: list[str] = field(default_factory=list)
    # A round more with the most workers at in_flight[0], its jobs asking for these formats
    # (compared with the same setting without formats); empty: no such round.
    formats: list[str] = field(default_factory=lambda: ["markdown", "links", "metadata"])
    # Rounds of each kind (with and without formats) at that setting, alternating which goes
    # first; the goal compares medians (one round differs from the next by up to ~15% here).
    formats_trials: int = 3
    profile_formats: bool = False  # the profiled round's jobs ask for ``formats`` too


async def run_e2e(
    stack: BenchStack, urls: list[str], plan: E2EPlan, progress: Progress
) -> dict[str, Any]:
    """One sink for the whole suite; one worker per round (restarted with another in-flight)."""
    prefix = await stack.new_prefix("e2e")
    kafka = stack.kafka_config(prefix)
    out: dict[str, Any] = {"prefix": prefix, "throughput": [], "latency": None, "profile": None}
    sink = stack.spawn("sink", ["sink"], stack.env(prefix))
    try:
        async with Driver(kafka, stack.dsn, progress) as driver:
            for i, mif in enumerate(plan.in_flight):
                # A setting measured twice gets its own tenants (job ids) the second time.
                again = plan.in_flight[:i].count(mif)
                tag = f"{mif}-{again + 1}" if again else str(mif)
                round_ = _Round(stack, driver, prefix, urls, plan, progress, sink, mif, tag)
                rep = await round_.run(latency=i == 0)
                if i == 0:
                    out["latency"] = rep.pop("latency")
                out["throughput"].append(rep)
            for n in plan.workers:
                if n > 1:
                    mif = plan.in_flight[0]
                    round_ = _Round(
                        stack, driver, prefix, urls, plan, progress, sink, mif, f"{mif}x{n}", n
                    )
                    out["throughput"].append(await round_.run(latency=False))
            if plan.formats:
                await _formats_trials(stack, driver, prefix, urls, plan, progress, sink, out)
            if plan.memory_urls:
                round_ = _Round(
                    stack, driver, prefix, plan.memory_urls, plan, progress, sink, 200, "200-slow"
                )
                out["memory_round"] = await round_.run(latency=False)
                out["memory_round"]["slow_rate_kib"] = SLOW_RATE_KIB
            if plan.profiler:
                mif = plan.in_flight[0]
                tag = f"{mif}-{plan.profiler}"
                round_ = _Round(stack, driver, prefix, urls, plan, progress, sink, mif, tag)
                if plan.profile_formats:
                    round_.formats = plan.formats
                out["profile"] = await round_.run(latency=False, profiler=plan.profiler)
                out["profile"]["formats"] = round_.formats
    finally:
        await asyncio.to_thread(stack.stop, sink)
    out["sink_peak_rss_bytes"] = sink.peak_rss_bytes
    return out


async def _formats_trials(
    stack: BenchStack,
    driver: Driver,
    prefix: str,
    urls: list[str],
    plan: E2EPlan,
    progress: Progress,
    sink: Proc,
    out: dict[str, Any],
) -> None:
    """Rounds with ``plan.formats`` and without, at the most workers and in_flight[0]: the plain
    round of that setting measured above counts as the first without; then the two kinds
    alternate which goes first. ``formats_round`` is the median round with formats."""
    n, mif = max(plan.workers), plan.in_flight[0]
    first_plain = next(
        (r for r in out["throughput"] if r["workers"] == n and r["max_in_flight"] == mif), None
    )
    plain = [first_plain] if first_plain else []
    with_formats: list[dict[str, Any]] = []
    for t in range(max(1, plan.formats_trials)):
        kinds: list[bool] = [True] if t == 0 else [t % 2 == 1, t % 2 == 0]
        if t == 0 and not plain:
            kinds = [False, True]
        for formats in kinds:
            tag = f"{mif}x{n}-{'formats' if formats else 'plain'}-{t + 1}"
            round_ = _Round(stack, driver, prefix, urls, plan, progress, sink, mif, tag, n)
            round_.formats = plan.formats if formats else None
            rep = await round_.run(latency=False)
            (with_formats if formats else plain).append(rep)
    ranked = sorted(with_formats, key=lambda r: r.get("row_pages_per_s") or 0)
    out["formats_round"] = {**ranked[len(ranked) // 2], "formats": plan.formats}
    out["formats_trials"] = {
        "runs": len(with_formats),
        "plain_row_pages_per_s": [r.get("row_pages_per_s") for r in plain],
        "formats_row_pages_per_s": [r.get("row_pages_per_s") for r in with_formats],
        "plain_cpu_ms_per_page": [cpu_ms_per_page(r) for r in plain],
        "formats_cpu_ms_per_page": [cpu_ms_per_page(r) for r in with_formats],
    }


def cpu_ms_per_page(r: dict[str, Any]) -> dict[str, float]:
    """CPU per page (ms of one core) of each process group in an e2e round, until its last
    result."""
    rate = r.get("result_pages_per_s") or 0
    cpu = r.get("cpu_pct_until_last_result") or {}
    return {k: round(v * 10 / rate, 3) for k, v in cpu.items()} if rate else {}


@dataclass
class _Round:
    stack: BenchStack
    driver: Driver
    prefix: str
    urls: list[str]
    plan: E2EPlan
    progress: Progress
    sink: Proc
    in_flight: int
    tag: str  # names the round's worker, log and tenants
    workers: int = 1
    formats: list[str] | None = None  # options.formats of the round's jobs

    @property
    def objects_root(self) -> Path:
        return self.stack.workdir / "data" / "objects"

    def tier_topic(self) -> tuple[str, int]:
        """The http tier topic's name and partition count."""
        topics = self.stack.kafka_config(self.prefix).topics
        name = topics.tier("http")
        return name, next(spec.partitions for n, spec in topics.all() if n == name)

    async def _batch(
        self, urls: list[str], tenant: str, timeout_s: float
    ) -> tuple[Batch, dict[str, Any]]:
        await self.stack.add_tenant(tenant)
        batch = await self.driver.submit_many(urls, tenant)
        await self.driver.wait_results(batch, timeout_s)
        rows = await self.driver.wait_rows(batch, timeout_s)
        return batch, self.driver.report(batch, rows, self.objects_root)

    async def run(self, latency: bool, profiler: str | None = None) -> dict[str, Any]:
        mif = self.in_flight
        tag = self.tag
        env = self.stack.env(self.prefix, SCRAPIFIE_WORKER__MAX_IN_FLIGHT=str(mif))
        stem = self.plan.profile_stem
        profile_file = (
            stem.with_name(stem.name + ".pyisession")
            if profiler == "pyinstrument"
            else stem.with_name(stem.name + "-pyspy.txt")
        )
        wrapper = pyinstrument_wrapper(profile_file) if profiler == "pyinstrument" else None
        worker = self.stack.spawn(f"worker-{tag}", ["worker", "--tier", "http"], env, wrapper)
        # More worker processes share the tier topic's partitions (one per core is how the tier
        # scales: a worker is one Python thread). Each needs its own member id and metrics port.
        ports = [int(env["SCRAPIFIE_WORKER_METRICS_PORT"])]
        extra = []
        for n in range(2, self.workers + 1):
            ports.append(free_port())
            extra.append(
                self.stack.spawn(
                    f"worker-{tag}-{n}",
                    ["worker", "--tier", "http"],
                    {
                        **env,
                        "SCRAPIFIE_WORKER__INSTANCE_ID": f"bench-{tag}-{n}",
                        "SCRAPIFIE_WORKER_METRICS_PORT": str(ports[-1]),
                    },
                )
            )
        out: dict[str, Any] = {"max_in_flight": mif, "workers": self.workers}
        try:
            self.progress.phase(
                f"e2e [{tag}]: worker start, warm-up with {self.plan.warmup_jobs} jobs"
            )
            self.driver.watch = [worker, *extra, self.sink]
            # Every worker must own part of the tier topic before a round: one that joins late
            # triggers a rebalance mid-round and leaves the round to the others (seen: 600
            # instead of 1,000 pages/s, the late worker doing 360 of 2,000 jobs).
            await wait_assigned(ports, *self.tier_topic())
            # The warm-up's jobs are the round's own kind (with its formats, if any): the worker's
            # converters and the broker's JIT see records of the sizes the round then measures.
            self.driver.formats = self.formats
            try:
                _, warm = await self._batch(
                    self.urls[: self.plan.warmup_jobs], f"bench-warmup-{tag}", WARMUP_TIMEOUT_S
                )
            finally:
                self.driver.formats = None
            if not warm["complete"]:
                raise RuntimeError(
                    f"warm-up incomplete ({warm['results']} results, {warm['rows']} rows of "
                    f"{warm['jobs']}) after {WARMUP_TIMEOUT_S:g}s; see the worker and sink logs"
                )
            if latency:  # the first round
                out["broker_warmup"] = await self._warm_broker()
                out["latency"] = await self._latency()
            out["assigned_partitions"] = await wait_assigned(ports, *self.tier_topic())
            self.progress.phase(f"e2e [{tag}]: {len(self.urls):,} jobs at once")
            tenant = f"bench-c{tag}"
            await self.stack.add_tenant(tenant)
            sampler = InFlightSampler(int(env["SCRAPIFIE_WORKER_METRICS_PORT"]))
            meter = CpuMeter(
                {
                    "worker": worker.pid,
                    **{f"worker-{n}": p.pid for n, p in enumerate(extra, start=2)},
                    "sink": self.sink.pid,
                    "kafka": self.stack.kafka_pid,
                    "postgres": self.stack.postgres_pid,
                    "nginx": self.plan.nginx_pid,
                    "bench": os.getpid(),
                },
                single=frozenset({"bench"}),  # our children are the processes above
            )
            if profiler is None:  # scraping /metrics costs the worker CPU: not while profiling
                sampler.start()
            meter.start()
            spy = PySpy(worker.pid, profile_file) if profiler == "py-spy" else None
            # The sink's share of the pipeline's CPU is seen only here (results with content,
            # objects and rows together); py-spy can attach to it whichever profiler runs.
            sink_file = stem.with_name(stem.name.removesuffix("-worker") + "-sink-e2e-pyspy.txt")
            sink_spy = (
                PySpy(self.sink.pid, sink_file)
                if profiler is not None and pyspy_binary() is not None and self.sink.pid
                else None
            )
            kafka_pid = self.stack.kafka_pid
            jit0 = jit_cpu_seconds(kafka_pid) if kafka_pid else 0.0
            try:
                self.driver.formats = self.formats
                batch = await self.driver.submit_many(self.urls, tenant)
                await self.driver.wait_results(batch, self.plan.timeout_s)
            finally:
                self.driver.formats = None
                cpu = meter.stop()
                if kafka_pid:
                    out["broker_jit_cpu_s"] = round(jit_cpu_seconds(kafka_pid) - jit0, 2)
                for n in range(2, self.workers + 1):  # one figure for the tier's processes
                    cpu["worker"] = round(cpu["worker"] + cpu.pop(f"worker-{n}", 0.0), 1)
                for attached in (spy, sink_spy):
                    if attached is not None:
                        await asyncio.to_thread(attached.stop)
                in_flight = await sampler.stop()
            rows = await self.driver.wait_rows(batch, self.plan.timeout_s)
            out.update(self.driver.report(batch, rows, self.objects_root))
            out["cpu_pct_until_last_result"] = cpu
            out["in_flight_seen"] = in_flight
        finally:
            self.driver.watch = [self.sink]
            for proc in (worker, *extra):
                await asyncio.to_thread(self.stack.stop, proc)
        out["worker_peak_rss_bytes"] = max(p.peak_rss_bytes or 0 for p in (worker, *extra))
        if profiler is not None:
            if profiler == "pyinstrument":
                stacks = load_pyinstrument(profile_file)
                out["profile_html"] = str(pyinstrument_html(profile_file))
            else:
                stacks = load_pyspy(profile_file)
            out["profiler"] = profiler
            out["profile_file"] = str(profile_file)
            out["summary"] = summarize(stacks, REPO)
            if sink_spy is not None:
                out["sink_profile_file"] = str(sink_file)
                out["sink_summary"] = summarize(load_pyspy(sink_file), REPO)
        return out

    async def _warm_broker(self) -> dict[str, Any]:
        """Pass the corpus through until the broker's JIT compiler is quiet (or a time cap)."""
        pid = self.stack.kafka_pid
        if pid is None:
            return {"passes": 0, "seconds": 0.0, "jit_share_last_pass": None}
        started = time.monotonic()
        passes, share = 0, None
        while time.monotonic() - started < BROKER_WARMUP_MAX_S:
            passes += 1
            self.progress.phase(f"e2e: warming the broker's JIT, pass {passes}")
            jit0, t0 = jit_cpu_seconds(pid), time.monotonic()
            await self._batch(self.urls, f"bench-jit-{self.tag}-{passes}", WARMUP_TIMEOUT_S)
            share = (jit_cpu_seconds(pid) - jit0) / (time.monotonic() - t0)
            if share < JIT_QUIET_SHARE:
                break
        return {
            "passes": passes,
            "seconds": round(time.monotonic() - started, 1),
            "jit_share_last_pass": None if share is None else round(share, 3),
        }

    async def _latency(self) -> dict[str, Any]:
        n = self.plan.latency_jobs
        self.progress.phase(f"e2e: latency at low load ({n} jobs, one at a time)")
        batch = Batch("bench-latency")
        await self.stack.add_tenant(batch.tenant)
        for i in range(n):
            await self.driver.submit_one_and_wait(self.urls[i % len(self.urls)], batch, 30)
            self.progress.update(i + 1, n, "jobs")
        rows = await self.driver.wait_rows(batch, self.plan.timeout_s)
        return self.driver.report(batch, rows, self.objects_root)
