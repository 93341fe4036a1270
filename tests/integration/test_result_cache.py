"""The result cache through the real stack: a job with max_age_s is answered from an earlier
fetch of the same page (the target sees one request), can get formats the first job did not
ask for, is metered at the cache price, and never crosses tenants."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from scrapifie.admin import add_tenant
from tests.integration.conftest import Stack
from tests.integration.targets import ARTICLE, TargetSite

pytestmark = pytest.mark.integration


async def _run(client: httpx.AsyncClient, url: str, options: dict[str, object]) -> dict:
    resp = await client.post(
        "/v1/jobs", params={"wait": 60}, json={"url": url, "tier": "http", "options": options}
    )
    assert resp.status_code == 200, resp.text
    job = resp.json()
    assert job["status"] == "succeeded", job
    return job


async def _history(client: httpx.AsyncClient, job_id: str) -> list[dict]:
    """The job's attempts once the ledger sink has written them (it may trail the results)."""
    for _ in range(100):
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["history"]:
            return list(job["history"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"no history for {job_id}")


async def test_a_second_job_is_answered_from_the_cache(stack: Stack, target: TargetSite) -> None:
    path = f"/counted/{uuid.uuid4()}"
    url = f"{target.base}{path}"
    async with stack.client() as client:
        first = await _run(client, url, {})
        assert first["cached_from"] is None
        # Same page, spelled differently (host case, default port, fragment), asking for a
        # format the first job did not: answered from the first job's fetch.
        spelled = "HTTP://" + url.removeprefix("http://") + "#frag"
        second = await _run(client, spelled, {"max_age_s": 600, "formats": ["markdown"]})
        assert target.hits[path] == 1
        assert second["cached_from"] == first["job_id"]
        history = await _history(client, second["job_id"])
        assert [(e["outcome"], e["credits"]) for e in history] == [("ok", 0)]  # cache price
        markdown = await client.get(second["formats"]["markdown"]["url"])
        assert "記事の見出し" in markdown.text
        raw = await client.get(second["formats"]["raw"]["url"])
        assert raw.content == ARTICLE.encode()

        # max_age_s absent, or a fetch older than allowed: a new fetch.
        await _run(client, url, {})
        assert target.hits[path] == 2
        third = await _run(client, url, {"max_age_s": 600, "headers": {"Accept-Language": "fr"}})
        assert third["cached_from"] is None and target.hits[path] == 3  # other fetch options


async def test_tenants_never_see_each_others_cached_pages(stack: Stack, target: TargetSite) -> None:
    path = f"/counted/{uuid.uuid4()}"
    url = f"{target.base}{path}"
    other_key = await add_tenant(stack.dsn, f"other-{uuid.uuid4().hex[:8]}", 1000)
    async with stack.client() as client:
        await _run(client, url, {})
    async with httpx.AsyncClient(
        base_url=stack.gateway, headers={"Authorization": f"Bearer {other_key}"}, timeout=30
    ) as other:
        theirs = await _run(other, url, {"max_age_s": 600})
    assert theirs["cached_from"] is None
    assert target.hits[path] == 2
