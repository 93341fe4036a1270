"""The job's story through the real stack: GET /v1/jobs/{id} lists every attempt (tier,
outcome, status, cost) and escalation in order, as the sinks wrote them from the topics."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest

from tests.integration.conftest import REPO, Stack
from tests.integration.helpers import wait_final
from tests.integration.targets import TargetSite

pytestmark = pytest.mark.integration


async def test_a_retried_job_shows_both_attempts_in_order(stack: Stack, target: TargetSite) -> None:
    url = f"{target.base}/flaky/{uuid.uuid4()}"  # 503 first, then the page
    async with stack.client() as client:
        job_id = (await client.post("/v1/jobs", json={"url": url, "tier": "http"})).json()["job_id"]
        await wait_final(stack.dsn, [job_id], timeout_s=60)
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "succeeded" and job["current_tier"] is None
    history = job["history"]
    assert [(e["event"], e["tier"], e["attempt"], e["outcome"]) for e in history] == [
        ("attempt", "http", 1, "transient"),
        ("attempt", "http", 2, "ok"),
    ], history
    assert [e["http_status"] for e in history] == [503, 200]
    assert [e["credits"] for e in history] == [0, 1] and job["credits"] == 1
    assert history[0]["at"] <= history[1]["at"]
    assert job["attempts"] == 2 and job["links"]["self"] == f"/v1/jobs/{job_id}"

    # The same story for a person, from the CLI.
    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "scrapifie", "jobs", "show", job_id],
        env={
            **stack.env,
            "SCRAPIFIE_API_KEY": stack.api_key,
            "SCRAPIFIE_GATEWAY_URL": stack.gateway,
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"job {job_id}  succeeded"), shown.stdout
    attempts = [line for line in lines if " attempt " in line]
    assert "transient" in attempts[0] and "503" in attempts[0]
    assert " ok " in attempts[1] and "1 credits" in attempts[1]


async def test_wait_answers_with_the_story_too(stack: Stack, target: TargetSite) -> None:
    async with stack.client() as client:
        resp = await client.post(
            "/v1/jobs", params={"wait": 30}, json={"url": f"{target.base}/page/21"}
        )
    assert resp.status_code == 200, resp.text
    job = resp.json()
    assert job["status"] == "succeeded"
    assert [e["event"] for e in job["history"]] == ["attempt"]
    assert job["history"][0]["outcome"] == "ok"


async def test_the_api_lists_only_statuses_that_are_written(stack: Stack) -> None:
    async with stack.client() as client:
        spec = (await client.get("/openapi.json")).json()
    statuses = spec["components"]["schemas"]["JobStatus"]["enum"]
    assert sorted(statuses) == ["failed", "queued", "succeeded"]


async def test_the_served_document_matches_what_the_gateway_accepts(stack: Stack) -> None:
    """Every documented example is accepted; a field or option the document does not list
    is refused."""
    async with stack.client() as client:
        spec = (await client.get("/openapi.json")).json()
        body = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
        assert body["examples"]
        for name, example in body["examples"].items():
            value = {k: v for k, v in example["value"].items() if k != "job_id"}
            resp = await client.post("/v1/jobs", json=value)
            assert resp.status_code == 202, (name, resp.text)
        documented = spec["components"]["schemas"]["JobSubmission"]["properties"]
        options = spec["components"]["schemas"]["FetchOptions"]["properties"]
        assert "priority" not in documented and "proxy" not in options
        for extra in ({"priority": 1}, {"options": {"proxy": "http://x"}}):
            resp = await client.post("/v1/jobs", json={"url": "https://example.com/", **extra})
            assert resp.status_code == 400, resp.text
            assert "unknown" in resp.json()["error"]["message"]
