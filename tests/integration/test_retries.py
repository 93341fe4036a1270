"""Transient faults are retried in the same tier with backoff through delay topics, honouring
Retry-After, without holding up other jobs; a site that always times out fails with timeout."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from tests.integration.conftest import Stack
from tests.integration.helpers import wait_final
from tests.integration.targets import TargetSite

pytestmark = pytest.mark.integration


async def test_503_then_200_and_429_with_retry_after_succeed_after_a_retry(
    stack: Stack, target: TargetSite
) -> None:
    async with stack.client() as client:
        flaky = (await client.post("/v1/jobs", json={"url": f"{target.base}/flaky/1"})).json()
        limited = (
            await client.post("/v1/jobs", json={"url": f"{target.base}/ratelimited/1"})
        ).json()
    rows = await wait_final(stack.dsn, [flaky["job_id"], limited["job_id"]], timeout_s=60)
    for job in (flaky, limited):
        row = rows[job["job_id"]]
        assert (row["status"], row["http_status"], row["attempts"]) == ("succeeded", 200, 2), row
    async with await psycopg.AsyncConnection.connect(stack.dsn) as conn:
        cur = await conn.execute(
            "SELECT outcome, http_status, credits FROM attempts WHERE job_id = %s ORDER BY attempt",
            (limited["job_id"],),
        )
        assert await cur.fetchall() == [("transient", 429, 0), ("ok", 200, 1)]
    assert target.hits["/flaky/1"] == 2 and target.hits["/ratelimited/1"] == 2


async def test_always_timing_out_fails_after_the_attempts_without_delaying_others(
    stack: Stack, target: TargetSite
) -> None:
    async with stack.client() as client:
        hang = (
            await client.post(
                "/v1/jobs", json={"url": f"{target.base}/hang/1", "options": {"timeout_s": 1}}
            )
        ).json()
        await asyncio.sleep(1.5)  # the first attempt has timed out and is waiting to retry
        quick = await client.post(
            "/v1/jobs/batch", json={"jobs": [{"url": f"{target.base}/page/{i}"} for i in range(20)]}
        )
        quick_ids = [j["job_id"] for j in quick.json()["jobs"]]
    quick_rows = await wait_final(stack.dsn, quick_ids, timeout_s=60)
    hang_row = (await wait_final(stack.dsn, [hang["job_id"]], timeout_s=90))[hang["job_id"]]
    assert (hang_row["status"], hang_row["error_code"], hang_row["attempts"]) == (
        "failed",
        "timeout",
        3,
    )
    assert target.hits["/hang/1"] == 3
    # The retries waited in a delay topic, not in the worker: the later jobs finished first.
    assert max(r["finished_at"] for r in quick_rows.values()) < hang_row["finished_at"]
    assert all(r["status"] == "succeeded" for r in quick_rows.values())
