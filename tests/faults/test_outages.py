"""Backends away for 20 s mid-run: Kafka, PostgreSQL, the S3 endpoint (scenarios 3, 4, 5).

Each run submits 300 jobs through the gateway at 10 jobs/s (30 s) and takes one backend away
5 s in, for 20 s. The client is a careful one: it names its job ids and retries a 503 with the
same id. No process is restarted by hand. Time to recover: from the backend being back to every
job accepted until then being final in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from scrapifie.admin import add_tenant
from tests.faults.conftest import StackFactory
from tests.faults.helpers import (
    Submission,
    assert_consistent,
    poll_final,
    rows_for_tenant,
    settled_verify,
    submit,
    summary,
    wait_final,
)
from tests.faults.infra import FaultStack, SlowSite

pytestmark = pytest.mark.faults

N = 300
RATE = 10.0
OUTAGE_S = 20.0
OUTAGE_AT_S = 5.0
RECOVER_S = 45.0  # longest wait for the backlog once the backend is back
GIVE_UP_S = 45.0  # a job the gateway has not accepted by then is left (and reported)


class Prober:
    """Polls the gateway while a backend is away: reads of a known job, its content, and
    readiness; keeps the status codes seen."""

    def __init__(self, stack: FaultStack, job_id: str) -> None:
        self.stack = stack
        self.job_id = job_id
        self.seen: dict[str, Counter[int]] = {
            "job": Counter(),
            "content": Counter(),
            "readyz": Counter(),
        }
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with self.stack.client(timeout_s=15) as client:
            while not self._stop.is_set():
                for name, path in (
                    ("job", f"/v1/jobs/{self.job_id}"),
                    ("content", f"/v1/jobs/{self.job_id}/content"),
                    ("readyz", "/readyz"),
                ):
                    try:
                        resp = await client.get(path)
                        self.seen[name][resp.status_code] += 1
                    except httpx.HTTPError:
                        self.seen[name][0] += 1
                await asyncio.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()


async def _outage(
    stack: FaultStack,
    site: SlowSite,
    take_down: Callable[[], Awaitable[None]],
    bring_back: Callable[[], Awaitable[None]],
    record: Callable[..., None],
    scenario: str,
    during: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    after: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> tuple[dict[str, Any], Submission]:
    """Submit N jobs, break a backend 5 s in for 20 s, measure, record the figures and check
    the promise; returns (figures, submission) for the scenario's own assertions."""
    pids = stack.pids()
    # A job finished before the outage: reads of it are probed during the outage.
    first = await submit(stack, [f"{site.base}/page/{N}"])
    await wait_final(stack.dsn, first.ids, timeout_s=60)
    live = Submission()
    submitting = asyncio.create_task(
        submit(
            stack,
            [f"{site.base}/page/{i}" for i in range(N)],
            rate_per_s=RATE,
            concurrency=16,
            give_up_s=GIVE_UP_S,
            out=live,
        )
    )
    await asyncio.sleep(OUTAGE_AT_S)
    prober = Prober(stack, first.ids[0])
    await take_down()
    down_at = time.monotonic()
    probing = asyncio.create_task(prober.run())
    extra = await during() if during else {}
    await asyncio.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
    prober.stop()
    await probing
    await bring_back()
    up_at = time.monotonic()
    # Recovery: every job accepted by now is final (measured while submission goes on).
    caught_up = await poll_final(stack.dsn, live.accepted_before(up_at), timeout_s=RECOVER_S)
    sub = await submitting
    accepted_during = [j for j, at in sub.accepted.items() if down_at <= at <= up_at]
    if caught_up is not None:
        await poll_final(stack.dsn, sub.ids, timeout_s=RECOVER_S)
    if after:
        extra.update(await after())
    code, report, settle_s = await settled_verify(stack, timeout_s=20)
    figures = {
        **summary(report),
        "accepted_during_outage": len(accepted_during),
        "never_accepted": len(sub.gave_up),
        "post_statuses": dict(sub.responses),
        "post_errors": dict(sub.errors),
        "reads_during_outage": {k: dict(v) for k, v in prober.seen.items()},
        "time_to_recover_s": None if caught_up is None else round(caught_up - up_at, 1),
        "verify_settle_s": round(settle_s, 1),
        "processes_alive": stack.alive(),
        **extra,
    }
    record(scenario, **figures)
    problems = {c["name"]: c["examples"] for c in report["checks"] if c["status"] != "ok"}
    assert not sub.gave_up, f"{len(sub.gave_up)} jobs never accepted: {figures}"
    assert caught_up is not None, f"not recovered in {RECOVER_S}s: {figures} {problems}"
    assert_consistent(report, code, stack, sub.ids + first.ids)
    assert stack.alive() == dict.fromkeys(pids, True), stack.log_tail()
    assert stack.pids() == pids and not stack.restarts  # nothing restarted by hand
    assert figures["succeeded"] == N + 1
    return figures, sub


async def test_kafka_broker_stopped_for_20s(
    make_stack: StackFactory, slow_site: SlowSite, record: Callable[..., None]
) -> None:
    """Scenario 3: the broker stops (clean shutdown) for 20 s mid-run and starts again on the
    same storage; every process resumes by itself (faust#523: agents that stall after an
    outage would leave jobs unfinished here). Also: a client that lets the gateway choose job
    ids and gets 503 while Kafka is away must not find those jobs run anyway."""
    stack = await make_stack()
    probe_tenant = f"probe-{uuid.uuid4().hex[:6]}"
    probe_key = await add_tenant(stack.dsn, probe_tenant, stack.initial_credits)
    probe: Counter[int] = Counter()

    async def down() -> None:
        await asyncio.to_thread(stack.broker.stop)

    async def up() -> None:
        await asyncio.to_thread(stack.broker.start)

    async def during() -> dict[str, Any]:
        urls = [f"{slow_site.base}/page/{i}" for i in (1, 2, 3)]
        async with stack.client(api_key=probe_key) as client:
            posts = [client.post("/v1/jobs", json={"url": url}) for url in urls]
            for resp in await asyncio.gather(*posts):
                probe[resp.status_code] += 1
        return {}

    async def after() -> dict[str, Any]:
        rows = await rows_for_tenant(stack.dsn, probe_tenant)
        return {"probe_posts": dict(probe), "probe_jobs_run_anyway": len(rows)}

    figures, sub = await _outage(
        stack, slow_site, down, up, record, "3 Kafka stopped 20 s", during, after
    )
    # While Kafka is away the gateway cannot accept jobs; it says so with 503 (never 500).
    assert set(sub.responses) <= {202, 503}, sub.responses
    # Reads come from PostgreSQL and keep working.
    assert set(figures["reads_during_outage"]["job"]) == {200}, figures
    # A refused job is not run: 503 means "not accepted" to a client without its own ids.
    assert probe == {503: 3} and figures["probe_jobs_run_anyway"] == 0, figures


async def test_postgres_stopped_for_20s(
    make_stack: StackFactory, slow_site: SlowSite, record: Callable[..., None]
) -> None:
    """Scenario 4: PostgreSQL stops for 20 s mid-run. Sinks pause and retry with backoff,
    nothing goes to the DLQ, every row arrives after it returns; meanwhile the gateway answers
    503 for reads and keeps accepting jobs into Kafka."""
    stack = await make_stack()

    async def down() -> None:
        await asyncio.to_thread(stack.pg.stop)

    async def up() -> None:
        await asyncio.to_thread(stack.pg.start)

    figures, sub = await _outage(stack, slow_site, down, up, record, "4 PostgreSQL stopped 20 s")
    reads = figures["reads_during_outage"]
    assert set(reads["job"]) == {503} and set(reads["content"]) == {503}, reads
    assert set(reads["readyz"]) == {503}, reads
    assert set(sub.responses) == {202}, sub.responses  # jobs kept flowing into Kafka
    assert figures["accepted_during_outage"] >= OUTAGE_S * RATE * 0.8, figures


async def test_s3_endpoint_fails_for_20s(
    make_stack: StackFactory, slow_site: SlowSite, record: Callable[..., None]
) -> None:
    """Scenario 5: the S3 endpoint answers 503 for 10 s, then stops listening for 10 s.
    Same expectations as for PostgreSQL, for content reads."""
    stack = await make_stack()
    failed_before = stack.s3.failed

    async def down() -> None:
        stack.s3.set_mode("503")

    async def during() -> dict[str, Any]:
        await asyncio.sleep(OUTAGE_S / 2)
        await asyncio.to_thread(stack.s3.set_mode, "down")
        return {}

    async def up() -> None:
        await asyncio.to_thread(stack.s3.set_mode, "pass")

    async def after() -> dict[str, Any]:
        return {"s3_requests_answered_503": stack.s3.failed - failed_before}

    figures, sub = await _outage(
        stack, slow_site, down, up, record, "5 S3 503 10 s + down 10 s", during, after
    )
    assert figures["s3_requests_answered_503"] > 0  # the sink did meet the failing endpoint
    reads = figures["reads_during_outage"]
    assert set(reads["job"]) == {200}, reads  # job rows come from PostgreSQL
    assert set(reads["content"]) == {503}, reads
    assert set(sub.responses) == {202}, sub.responses
