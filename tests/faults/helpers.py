"""Submitting work while things break, and measuring what came out."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import psycopg

from schemas.records import FINAL_STATUSES
from tests.faults.infra import FaultStack


class Gateway(Protocol):
    """What ``submit`` needs of a stack: a client of its gateway with a tenant's key."""

    def client(self, api_key: str | None = None, timeout_s: float = 30) -> httpx.AsyncClient: ...


@dataclass
class Submission:
    """Jobs submitted through the gateway with client-chosen ids (the idempotency key), each
    retried with the same id until the gateway answers 202, as a careful client does."""

    accepted: dict[str, float] = field(default_factory=dict)  # job id -> monotonic time of 202
    responses: Counter[int] = field(default_factory=Counter)  # HTTP status -> count
    errors: Counter[str] = field(default_factory=Counter)  # transport errors by type
    seconds_503: list[float] = field(default_factory=list)  # how long each 503 answer took
    gave_up: list[str] = field(default_factory=list)  # job ids never accepted

    @property
    def ids(self) -> list[str]:
        return list(self.accepted)

    def accepted_before(self, t: float) -> list[str]:
        return [j for j, at in self.accepted.items() if at <= t]


async def submit(
    stack: Gateway,
    urls: Sequence[str],
    *,
    rate_per_s: float | None = None,
    concurrency: int = 16,
    give_up_s: float = 120,
    out: Submission | None = None,
) -> Submission:
    """Submit one job per URL, paced at ``rate_per_s`` (None: as fast as ``concurrency``).
    A job not accepted within ``give_up_s`` is left in ``gave_up``. Progress is visible in
    ``out`` (pass one in to watch it) while this runs."""
    out = out if out is not None else Submission()
    sem = asyncio.Semaphore(concurrency)
    t0 = time.monotonic()
    async with stack.client(timeout_s=30) as client:

        async def one(i: int, url: str) -> None:
            if rate_per_s:
                await asyncio.sleep(max(0.0, t0 + i / rate_per_s - time.monotonic()))
            job_id = str(uuid.uuid4())
            deadline = time.monotonic() + give_up_s
            delay = 0.2
            while True:
                async with sem:
                    sent = time.monotonic()
                    try:
                        resp = await client.post("/v1/jobs", json={"url": url, "job_id": job_id})
                    except httpx.HTTPError as exc:
                        out.errors[type(exc).__name__] += 1
                        resp = None
                if resp is not None:
                    out.responses[resp.status_code] += 1
                    if resp.status_code == 202:
                        out.accepted[job_id] = time.monotonic()
                        return
                    if resp.status_code == 503:
                        out.seconds_503.append(time.monotonic() - sent)
                    elif resp.status_code < 500:
                        raise AssertionError(f"POST /v1/jobs: {resp.status_code} {resp.text}")
                    # Any other 5xx: retried with the same id (counted; tests assert on them).
                if time.monotonic() > deadline:
                    out.gave_up.append(job_id)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

        await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))
    return out


async def final_count(dsn: str, job_ids: Sequence[str]) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM jobs WHERE job_id = ANY(%s) AND status = ANY(%s)",
            (list(job_ids), list(FINAL_STATUSES)),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def attempt_count(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM attempts")
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def wait_final(dsn: str, job_ids: Sequence[str], timeout_s: float = 180) -> float:
    """Poll until every job is final; returns the monotonic time it happened."""
    done = await poll_final(dsn, job_ids, timeout_s)
    if done is None:
        left = len(job_ids) - await final_count(dsn, job_ids)
        raise AssertionError(f"{left} of {len(job_ids)} jobs not final after {timeout_s}s")
    return done


async def poll_final(dsn: str, job_ids: Sequence[str], timeout_s: float) -> float | None:
    """Poll until every job is final; the monotonic time it happened, or None on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if await final_count(dsn, job_ids) == len(job_ids):
                return time.monotonic()
        except psycopg.OperationalError:
            pass  # the database is the thing being broken
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.25)


async def rows_for_tenant(dsn: str, tenant: str) -> dict[str, dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT job_id, status, error_code FROM jobs WHERE tenant_id = %s", (tenant,)
        )
        return {r[0]: {"status": r[1], "error_code": r[2]} for r in await cur.fetchall()}


async def settled_verify(
    stack: FaultStack, timeout_s: float = 90
) -> tuple[int, dict[str, Any], float]:
    """Run ``scrapifie verify`` until nothing is pending (or ``timeout_s``).

    Returns (exit code, report, seconds it took to settle)."""
    start = time.monotonic()
    while True:
        code, report = await asyncio.to_thread(stack.verify)
        pending = [c["name"] for c in report["checks"] if c["status"] == "pending"]
        if not pending or time.monotonic() - start > timeout_s:
            return code, report, time.monotonic() - start
        await asyncio.sleep(1.0)


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    for c in report["checks"]:
        if c["name"] == name:
            return dict(c)
    raise KeyError(name)


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, from a verify report."""
    f = report["figures"]
    return {
        "jobs": f["jobs"]["total"],
        "final": f["jobs"]["final"],
        "succeeded": f["jobs"]["succeeded"],
        "failed": f["jobs"]["failed"],
        "unfinished": f["jobs"]["unfinished"],
        "duplicate_attempts": f["attempts"]["duplicates"],
        "missing_objects": f["objects"]["missing"],
        "extra_objects": f["objects"]["extra"],
        "attempts": f["attempts"]["rows"],
        "metering_events": f["metering"]["distinct_events"],
        "metering_records": f["metering"]["records"],
        "result_records": f["results"]["records"],
        "request_records": f["requests"]["records"],
        "dlq": f["dlq"]["records"],
    }


def assert_consistent(
    report: dict[str, Any], code: int, stack: FaultStack, job_ids: Sequence[str]
) -> None:
    """The promise, for one scenario: verify passes, nothing is pending, every accepted job is
    final exactly once, credits add up, and nothing was sent to the DLQ."""
    broken = {c["name"]: c["examples"] for c in report["checks"] if c["status"] != "ok"}
    assert code == 0 and report["ok"] and not broken, broken
    f = report["figures"]
    assert f["jobs"]["total"] == f["jobs"]["final"] == len(job_ids), f["jobs"]
    assert f["requests"]["jobs"] == len(job_ids), f["requests"]
    assert f["attempts"]["rows"] == f["metering"]["distinct_events"], f
    assert f["attempts"]["duplicates"] == 0
    assert f["objects"]["missing"] == f["objects"]["extra"] == 0
    assert f["objects"]["in_window"] == f["jobs"]["succeeded"], f["objects"]
    assert f["dlq"]["records"] == 0, f["dlq"]
    tenant = f["tenants"][stack.tenant]
    assert tenant["implied_opening_balance"] == stack.initial_credits, tenant
    assert tenant["used_all_time"] == f["attempts"]["credits"]
