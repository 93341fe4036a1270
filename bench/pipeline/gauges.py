"""A worker's Prometheus gauges, read from its /metrics endpoint during a round."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any


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
