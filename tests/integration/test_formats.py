"""Formats through the real stack: a job asking for markdown, text, links, metadata and extract
rules gets each stored as an object of its own, listed on the job and served by the content
endpoint with its media type; the page itself is served as fetched (raw) and as UTF-8 (html)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from tests.integration.conftest import REPO, Stack
from tests.integration.targets import ARTICLE, TargetSite

pytestmark = pytest.mark.integration

RULES = {
    "heading": "article h1",
    "price": {"css": ".price", "type": "number"},
    "links": {"css": "article a", "attr": "href", "all": True},
    "missing": ".no-such-thing",
}


async def test_every_format_of_a_shift_jis_article(stack: Stack, target: TargetSite) -> None:
    url = f"{target.base}/article-sjis"
    options = {
        "formats": ["html", "markdown", "text", "links", "metadata", "clean_html"],
        "extract": RULES,
    }
    async with stack.client() as client:
        resp = await client.post(
            "/v1/jobs", params={"wait": 60}, json={"url": url, "tier": "http", "options": options}
        )
        assert resp.status_code == 200, resp.text
        job = resp.json()
        assert job["status"] == "succeeded", job
        formats = job["formats"]
        assert set(formats) == {
            "html",
            "raw",
            "markdown",
            "text",
            "links",
            "metadata",
            "clean_html",
            "extract",
        }, formats
        got = {}
        for name, view in formats.items():
            r = await client.get(view["url"])
            assert r.status_code == 200, (name, r.text)
            assert r.headers["content-type"].split(";")[0] == view["media_type"].split(";")[0]
            assert r.headers["x-content-type-options"] == "nosniff"
            got[name] = r.content

        # raw is the bytes as sent (Shift_JIS); html and every text format are UTF-8.
        assert got["raw"] == ARTICLE.encode("shift_jis")
        assert got["html"].decode("utf-8") == ARTICLE
        markdown = got["markdown"].decode("utf-8")
        assert "記事の見出し" in markdown and "これは本文の最初の段落です" in markdown
        assert "フッター" not in markdown  # main content only, by default
        assert "七ページ" in got["text"].decode("utf-8")
        links = json.loads(got["links"])
        assert f"{target.base}/page/7" in [link["url"] for link in links]
        assert len({link["url"] for link in links}) == len(links)  # deduplicated
        meta = json.loads(got["metadata"])
        assert meta["title"] == "記事のタイトル" and meta["language"] == "ja"
        assert meta["canonical"] == f"{target.base}/article-sjis"
        extracted = json.loads(got["extract"])
        assert extracted["heading"] == "記事の見出し"
        assert extracted["price"] == 1280
        assert extracted["links"] == [f"{target.base}/page/7"]
        assert extracted["missing"] is None

        # A format the job did not ask for, and a name that is no format.
        r = await client.get(f"/v1/jobs/{job['job_id']}/content", params={"format": "screenshot"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "format_not_available"
        r = await client.get(f"/v1/jobs/{job['job_id']}/content", params={"format": "pdf"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_format"


async def test_a_bad_selector_is_a_400_and_queues_nothing(stack: Stack, target: TargetSite) -> None:
    async with stack.client() as client:
        for rules in ({"x": "a[[["}, {"x": {"xpath": "//*["}}, {"x": {"css": "a", "bogus": 1}}):
            resp = await client.post(
                "/v1/jobs", json={"url": f"{target.base}/page/1", "options": {"extract": rules}}
            )
            assert resp.status_code == 400, resp.text
            assert resp.json()["error"]["code"] == "invalid_request"
            assert "options.extract.x" in resp.json()["error"]["message"]


async def test_a_job_without_formats_has_the_page_only(stack: Stack, target: TargetSite) -> None:
    async with stack.client() as client:
        resp = await client.post(
            "/v1/jobs", params={"wait": 60}, json={"url": f"{target.base}/page/3", "tier": "http"}
        )
        job = resp.json()
    assert job["status"] == "succeeded"
    assert set(job["formats"]) == {"html", "raw"}


async def test_a_runaway_selector_is_stopped_and_harms_nothing(
    stack: Stack, target: TargetSite
) -> None:
    """A rule that is valid but quadratic on a big page runs past the deadline: it is stopped,
    the job succeeds with its page and without extract (the message says why), and the
    worker's next job is served as usual."""
    slow = {"n": {"xpath": "//*[count(following::*) > count(preceding::*)]", "all": True}}
    async with stack.client() as client:
        resp = await client.post(
            "/v1/jobs",
            params={"wait": 60},
            json={"url": f"{target.base}/many-nodes", "tier": "http", "options": {"extract": slow}},
        )
        job = resp.json()
        assert job["status"] == "succeeded", job
        assert "extract" not in job["formats"] and "raw" in job["formats"]
        assert "extract: the extraction rules ran past" in job["error_message"]
        after = await client.post(
            "/v1/jobs",
            params={"wait": 30},
            json={"url": f"{target.base}/page/4", "options": {"extract": {"t": "h1"}}},
        )
        assert after.json()["status"] == "succeeded"
        extracted = await client.get(after.json()["formats"]["extract"]["url"])
        assert extracted.json() == {"t": "Page 4"}


async def test_the_readme_consumer_example_reads_the_results(
    stack: Stack, target: TargetSite
) -> None:
    """examples/consume_results.py (fastavro and the .avsc files only) reads the results a
    live stack wrote, formats included."""
    async with stack.client() as client:
        resp = await client.post(
            "/v1/jobs",
            params={"wait": 60},
            json={"url": f"{target.base}/page/9", "options": {"formats": ["markdown"]}},
        )
        assert resp.json()["status"] == "succeeded"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "examples" / "consume_results.py"),
        "--bootstrap",
        stack.kafka.bootstrap,
        "--topic",
        stack.kafka.topics.results,
        "--schemas",
        str(REPO / "schemas" / "avro"),
        "--max",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    line = out.decode().splitlines()[0].split(" ", 3)
    assert line[1] in ("succeeded", "failed"), out


async def test_wait_can_inline_small_formats(stack: Stack, target: TargetSite) -> None:
    async with stack.client() as client:
        resp = await client.post(
            "/v1/jobs",
            params={"wait": 60, "inline": "true"},
            json={
                "url": f"{target.base}/article-sjis",
                "options": {"formats": ["markdown", "links"], "extract": {"h": "h1"}},
            },
        )
        bad = await client.post(
            "/v1/jobs", params={"wait": 1, "inline": "maybe"}, json={"url": target.base}
        )
    job = resp.json()
    assert job["status"] == "succeeded", job
    inline = job["inline"]
    assert set(inline) == {"html", "markdown", "links", "extract"}
    assert "記事の見出し" in inline["markdown"] and inline["html"] == ARTICLE
    assert inline["extract"] == {"h": "記事の見出し"}
    assert isinstance(inline["links"], list)
    assert bad.status_code == 400
