"""Fairness between tenants: how long tenant B's few jobs take while tenant A floods the gateway.

Tenant A submits ``a_jobs`` jobs in batches as fast as the gateway takes them, resubmitting
what is refused with 429 ``too_many_jobs`` after a short pause (what a client honouring 429
does). As soon as A's first batch is queued, tenant B submits ``b_jobs`` jobs one by one with
``?wait=``. B's latency (submit → final) is measured twice: with A capped at ``cap`` jobs not
ended (the account limit, ``max_jobs``) and with A uncapped (its whole flood queued at once).
The jobs go through the real gateway, http worker and sinks; the pages are the bench corpus.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import psycopg

from bench.measure.progress import Progress
from bench.measure.stats import summary_ms
from bench.pipeline.stack import BenchStack
from scrapifie.admin import add_tenant
from scrapifie.local.ports import free_port

BATCH = 500


async def _tenant(stack: BenchStack, max_jobs: int | None) -> str:
    name = f"fair-{uuid.uuid4().hex[:8]}"
    key = await add_tenant(stack.dsn, name, 10**12)
    async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
        await conn.execute(
            "UPDATE tenants SET max_jobs = %s WHERE tenant_id = %s", (max_jobs, name)
        )
    return key


def _client(base: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120, trust_env=False
    )


async def _flood(base: str, key: str, urls: list[str], first_in: asyncio.Event) -> dict[str, Any]:
    """Tenant A: every URL submitted, batches refused with 429 sent again after 0.2 s."""
    started = time.monotonic()
    refused = 0
    async with _client(base, key) as client:
        for i in range(0, len(urls), BATCH):
            jobs = [{"url": u, "tier": "http"} for u in urls[i : i + BATCH]]
            while True:
                resp = await client.post("/v1/jobs/batch", json={"jobs": jobs})
                if resp.status_code == 202:
                    first_in.set()
                    break
                if resp.status_code != 429:
                    raise RuntimeError(f"tenant A's batch: {resp.status_code} {resp.text[:200]}")
                refused += 1
                await asyncio.sleep(0.2)
    return {"submit_s": round(time.monotonic() - started, 2), "refused_batches": refused}


async def _few(base: str, key: str, urls: list[str]) -> list[float]:
    """Tenant B: each job's submit → final time, in seconds."""
    async with _client(base, key) as client:

        async def one(url: str) -> float:
            t0 = time.monotonic()
            resp = await client.post(
                "/v1/jobs", params={"wait": 60}, json={"url": url, "tier": "http"}
            )
            if resp.status_code != 200:
                raise RuntimeError(f"tenant B's job: {resp.status_code} {resp.text[:200]}")
            return time.monotonic() - t0

        return list(await asyncio.gather(*(one(u) for u in urls)))


async def _round(
    stack: BenchStack, base: str, urls: list[str], a_jobs: int, b_jobs: int, cap: int | None
) -> dict[str, Any]:
    key_a = await _tenant(stack, cap)
    key_b = await _tenant(stack, None)
    flood_urls = [urls[i % len(urls)] for i in range(a_jobs)]
    first_in = asyncio.Event()
    flood = asyncio.create_task(_flood(base, key_a, flood_urls, first_in))
    await first_in.wait()
    b_latency = await _few(base, key_b, urls[:b_jobs])
    a = await flood
    return {
        "a_max_jobs": cap,
        "a_jobs": a_jobs,
        "b_jobs": b_jobs,
        "b_latency_ms": summary_ms(b_latency),
        **{f"a_{k}": v for k, v in a.items()},
    }


async def run_fairness(
    stack: BenchStack,
    urls: list[str],
    progress: Progress,
    a_jobs: int = 5000,
    b_jobs: int = 10,
    cap: int = 500,
) -> dict[str, Any]:
    prefix = await stack.new_prefix("fair")
    port = free_port()
    env = stack.env(
        prefix,
        SCRAPIFIE_GATEWAY__PORT=str(port),
        SCRAPIFIE_GATEWAY__TIERS='["http"]',
        SCRAPIFIE_GATEWAY__RATE_PER_S="100000",
        SCRAPIFIE_WORKER__MAX_IN_FLIGHT="64",
    )
    procs = [
        stack.spawn("fair-worker", ["worker", "--tier", "http"], env),
        stack.spawn("fair-sink", ["sink"], env),
        stack.spawn("fair-gateway", ["gateway"], env),
    ]
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"rounds": []}
    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            for _ in range(120):
                try:
                    if (await client.get(f"{base}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
        for c in (cap, None):
            label = f"A capped at {c} jobs" if c else "A uncapped"
            progress.phase(f"fairness: {a_jobs:,} jobs of A, {b_jobs} of B ({label})")
            out["rounds"].append(await _round(stack, base, urls, a_jobs, b_jobs, c))
    finally:
        for p in procs:
            await asyncio.to_thread(stack.stop, p)
    return out
