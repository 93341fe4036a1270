"""`scrapifie jobs show`: the story of a job, for a person."""

from __future__ import annotations

import pytest

from scrapifie.story import render_job

pytestmark = pytest.mark.unit

JOB = {
    "job_id": "6f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f",
    "tenant": "acme",
    "url": "http://example.com/app",
    "status": "succeeded",
    "requested_tier": "http",
    "tier": "browser",
    "current_tier": None,
    "attempts": 2,
    "credits": 5,
    "http_status": 200,
    "error_code": None,
    "error_message": None,
    "final_url": "http://example.com/app",
    "content_type": "text/html",
    "content_bytes": 1234,
    "content_sha256": "ab" * 32,
    "has_screenshot": False,
    "router_reason": None,
    "trace_id": "trace-1",
    "created_at": "2026-12-07T15:01:02.000000+00:00",
    "finished_at": "2026-12-07T15:01:03.100000+00:00",
    "history": [
        {
            "event": "attempt",
            "at": "2026-12-07T15:01:02.123000+00:00",
            "tier": "http",
            "attempt": 1,
            "outcome": "blocked",
            "http_status": 403,
            "error_code": "blocked",
            "duration_ms": 12,
            "bytes": 900,
            "credits": 0,
            "egress_pool": None,
        },
        {
            "event": "escalation",
            "at": "2026-12-07T15:01:02.124000+00:00",
            "from_tier": "http",
            "to_tier": "browser",
            "reason": "HTTP 403",
            "http_status": 403,
            "marker": "http_403",
        },
        {
            "event": "attempt",
            "at": "2026-12-07T15:01:03.001000+00:00",
            "tier": "browser",
            "attempt": 2,
            "outcome": "ok",
            "http_status": 200,
            "error_code": None,
            "duration_ms": 850,
            "bytes": 5000,
            "credits": 5,
            "egress_pool": "datacenter",
        },
    ],
    "links": {},
}


def test_the_story_is_told_in_order() -> None:
    text = render_job(JOB)
    lines = text.splitlines()
    assert lines[0].startswith(f"job {JOB['job_id']}  succeeded  (tier browser, 2 attempts")
    story = [line for line in lines if line.startswith("  15:")]
    assert "attempt 1" in story[0] and "blocked" in story[0] and "direct" in story[0]
    assert "escalated http -> browser: HTTP 403 [http_403]" in story[1]
    assert "attempt 2" in story[2] and "datacenter" in story[2] and "5 credits" in story[2]


def test_a_queued_job_says_where_it_waits() -> None:
    job = {**JOB, "status": "queued", "tier": None, "current_tier": "browser"}
    job["history"] = JOB["history"][:2]
    assert render_job(job).splitlines()[-1].strip() == "...        waiting for the browser tier"
