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
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.measure.procs import CpuMeter, host_probe_ms, jit_cpu_seconds
from bench.measure.profile import (
    PySpy,
    load_pyinstrument,
    load_pyspy,
    pyinstrument_html,
    pyinstrument_wrapper,
    pyspy_binary,
    summarize,
)
from bench.measure.progress import Progress
from bench.pipeline.driver import Batch, Driver
from bench.pipeline.gauges import InFlightSampler, wait_assigned
from bench.pipeline.stack import REPO, BenchStack, Proc
from bench.pipeline.target import SLOW_RATE_KIB
from scrapifie.local.ports import free_port

WARMUP_TIMEOUT_S = 120.0  # includes the worker's start-up and joining its consumer group
# A broker in production has long compiled its hot paths; a fresh one spends up to half of its
# CPU in the JIT compiler for the first ~10,000 jobs, which a measurement would charge to us.
JIT_QUIET_SHARE = 0.05  # of one core, over a pass of the corpus
BROKER_WARMUP_MAX_S = 120.0


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
        "plain_host_probe_ms": [r.get("host_probe_ms") for r in plain],
        "formats_host_probe_ms": [r.get("host_probe_ms") for r in with_formats],
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
            probe_before = host_probe_ms()
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
                out["host_probe_ms"] = [probe_before, host_probe_ms()]
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
