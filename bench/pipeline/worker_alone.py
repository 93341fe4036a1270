"""The http worker alone: jobs/s and CPU per job from a pre-filled tier topic.

The e2e rounds share two cores between the worker, the sink, the broker, PostgreSQL, nginx and
the bench, so the worker's CPU per page there moves with everything else. Here the tier topic of
a fresh prefix is filled first (the URL list, several times over), then
``python -m scrapifie worker --tier http`` starts and a consumer counts its results with large
fetches (little CPU of its own); no sink runs. The window is the 10th to the 90th percentile of
results, so start-up, the consumer joining and the tail are left out. Figures: jobs/s, the
worker's CPU per job (main thread and its helper threads) and the broker's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench.measure.procs import cpu_seconds
from bench.measure.progress import Progress
from bench.pipeline.driver import encode_request
from bench.pipeline.sinks import prefill
from bench.pipeline.stack import BenchStack
from schemas import Codec, site_key


async def run_worker_alone(
    stack: BenchStack,
    urls: list[str],
    jobs: int,
    in_flight: int,
    progress: Progress,
    timeout_s: float = 300.0,
    warm_up: bool = False,
) -> dict[str, Any]:
    """One measured round; ``warm_up`` runs a throwaway round first (a cold broker spends much
    of its CPU compiling for the first ~10,000 jobs)."""
    if warm_up:
        await _round(stack, urls, jobs, in_flight, progress, timeout_s)
    return await _round(stack, urls, jobs, in_flight, progress, timeout_s)


async def _round(
    stack: BenchStack,
    urls: list[str],
    jobs: int,
    in_flight: int,
    progress: Progress,
    timeout_s: float,
) -> dict[str, Any]:
    codec = Codec()
    prefix = await stack.new_prefix("worker")
    kafka = stack.kafka_config(prefix)
    topic = kafka.topics.tier("http")

    def records() -> Iterator[tuple[str, bytes, bytes]]:
        for i in range(jobs):
            url = urls[i % len(urls)]
            _, value = encode_request(codec, url, "bench-worker-alone", "http", "http")
            yield topic, site_key(url).encode(), value

    await stack.add_tenant("bench-worker-alone")  # jobs of unknown tenants are not run
    progress.phase(f"http worker alone: pre-filling {jobs:,} jobs")
    await prefill(kafka, records(), jobs, progress)
    progress.phase(f"http worker alone: {jobs:,} jobs, max_in_flight={in_flight}")
    env = stack.env(prefix, SCRAPIFIE_WORKER__MAX_IN_FLIGHT=str(in_flight))
    worker = stack.spawn(f"worker-alone-{in_flight}", ["worker", "--tier", "http"], env)
    consumer = AIOKafkaConsumer(
        kafka.topics.results,
        bootstrap_servers=kafka.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_min_bytes=1 << 20,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=kafka.max_message_bytes + 65536,
    )
    marks: dict[str, tuple[float, float, float, int]] = {}
    lo, hi = jobs // 10, (jobs * 9) // 10
    seen = 0
    deadline = time.monotonic() + timeout_s
    await consumer.start()
    try:
        while seen < jobs and time.monotonic() < deadline:
            if not worker.alive():
                raise RuntimeError(f"worker exited\n{worker.log_tail()}")
            batches = await consumer.getmany(timeout_ms=500)
            seen += sum(len(msgs) for msgs in batches.values())
            now = time.monotonic()
            for name, at in (("lo", lo), ("hi", hi)):
                if name not in marks and seen >= at:
                    marks[name] = (
                        now,
                        cpu_seconds([worker.pid]),
                        cpu_seconds([stack.kafka_pid] if stack.kafka_pid else []),
                        seen,
                    )
            progress.update(seen, jobs, "results")
    finally:
        await consumer.stop()
        await asyncio.to_thread(stack.stop, worker)
    out: dict[str, Any] = {"jobs": jobs, "results": seen, "max_in_flight": in_flight}
    if "lo" in marks and "hi" in marks:
        (t0, w0, k0, n0), (t1, w1, k1, n1) = marks["lo"], marks["hi"]
        n, wall = max(n1 - n0, 1), max(t1 - t0, 1e-9)
        out.update(
            jobs_per_s=round(n / wall, 1),
            worker_cpu_ms_per_job=round(1000 * (w1 - w0) / n, 3),
            worker_cpu_pct=round(100 * (w1 - w0) / wall, 1),
            kafka_cpu_ms_per_job=round(1000 * (k1 - k0) / n, 3),
        )
    out["worker_peak_rss_bytes"] = worker.peak_rss_bytes
    return out
