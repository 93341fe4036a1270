"""The browser and stealth tiers in the pipeline, with real Chromium: escalation from http,
learned routing, persistent stealth sessions per tenant, screenshots."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import SPECS, default_codec
from schemas.records import Escalation, ScrapeResult
from scrapifie.admin import add_tenant
from scrapifie.local.kafka import LocalKafka
from scrapifie.local.postgres import LocalPostgres
from streams.browser.config import HEADLESS_SHELL
from tests.integration.browser_targets import GatedSite, chromium_browser_pids, chromium_pids
from tests.integration.conftest import S3Endpoint, Stack, running_stack
from tests.integration.helpers import wait_final

pytestmark = pytest.mark.integration

SHELL = (
    '<html><head><title>app</title></head><body><div id="root"></div><script>'
    "document.getElementById('root').innerHTML = '<p>' + 'Rendered by JavaScript. '.repeat(30)"
    " + '</p>';</script></body></html>"
)
# The same app as minifiers write it: the app root's id unquoted.
MINIFIED_SHELL = (
    "<html><head><title>app</title></head><body><div id=app></div><script>"
    "document.getElementById('app').innerHTML = '<p>' + 'Rendered by JavaScript. '.repeat(30)"
    " + '</p>';</script></body></html>"
)
CHALLENGE = (
    "<html><body>checking<script>document.cookie = 'js_ok=1; path=/'; location.reload();"
    "</script></body></html>"
)


class JsSite:
    """Pages only a browser can read, on 127.0.0.7 (a site of its own for the router)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                cookies = self.headers.get("Cookie", "")
                extra: dict[str, str] = {}
                status = 200
                if path.startswith("/js-only/"):
                    body = SHELL
                elif path.startswith("/js-minified/"):
                    body = MINIFIED_SHELL
                elif path.startswith("/needs-js/"):
                    if "js_ok=1" in cookies:
                        body = "<html><body><p>" + "Welcome, browser. " * 30 + "</p></body></html>"
                    else:
                        status, body = 403, CHALLENGE
                elif path == "/session/set":
                    extra["Set-Cookie"] = "sid=kept; Path=/; Max-Age=3600"
                    body = "<html><body>" + "set " * 60 + "</body></html>"
                elif path == "/session/echo":
                    body = (
                        f"<html><body><p id='c'>cookies:[{cookies}]</p>"
                        + "x " * 120
                        + "</body></html>"
                    )
                else:
                    status, body = 404, "none"
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.7", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.7:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def js_site() -> Iterator[JsSite]:
    if not os.access(HEADLESS_SHELL, os.X_OK):
        pytest.fail(f"{HEADLESS_SHELL} is required (make install provides it)")
    site = JsSite()
    yield site
    site.close()


@pytest.fixture(scope="module")
def tier_stack(
    kafka: LocalKafka,
    postgres: LocalPostgres,
    s3: S3Endpoint,
    js_site: JsSite,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    env = {
        "SCRAPIFIE_WORKER__SITE_LIMITS": json.dumps(
            {"127.0.0.7": {"rate_per_s": 100, "concurrency": 8}}
        ),
        "SCRAPIFIE_BROWSER__BROWSERS": "1",
        "SCRAPIFIE_STEALTH__PERSISTENT_CONTEXTS": "2",
    }
    with running_stack(
        kafka,
        postgres,
        s3,
        tmp_path_factory.mktemp("tiers"),
        [js_site.base.removeprefix("http://")],
        env,
        tiers=("http", "browser", "stealth"),
    ) as st:
        yield st


async def _submit(st: Stack, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    async with st.client() as client:
        headers = {"Authorization": f"Bearer {key}"} if key else None
        resp = await client.post("/v1/jobs", json=body, headers=headers)
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["job_id"]
    return (await wait_final(st.dsn, [job_id], timeout_s=120))[job_id]


async def _escalations(st: Stack, job_ids: set[str]) -> list[Escalation]:
    consumer = AIOKafkaConsumer(
        st.kafka.topics.escalations,
        bootstrap_servers=st.kafka.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: list[Escalation] = []
    try:
        for _ in range(10):
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    record = default_codec().read(m.value or b"", Escalation)
                    if record.job_id in job_ids:
                        found.append(record)
            if len(found) >= len(job_ids):
                break
    finally:
        await consumer.stop()
    return found


@pytest.mark.parametrize("path", ["/js-only/1", "/js-minified/1"])
async def test_a_javascript_page_escalates_from_http_and_the_browser_renders_it(
    tier_stack: Stack, js_site: JsSite, path: str
) -> None:
    """Whatever the markup's spelling: the app root quoted or not."""
    row = await _submit(tier_stack, {"url": f"{js_site.base}{path}", "tier": "http"})
    assert (row["status"], row["tier"], row["attempts"]) == ("succeeded", "browser", 2), row
    async with tier_stack.client() as client:
        content = (await client.get(f"/v1/jobs/{row['job_id']}/content")).text
    assert "Rendered by JavaScript." in content
    (esc,) = await _escalations(tier_stack, {row["job_id"]})
    assert (esc.from_tier, esc.to_tier, esc.marker) == (
        "http",
        "browser",
        "empty_js_shell",
    )


async def test_an_auto_job_shows_its_attempts_and_escalation_trail(
    tier_stack: Stack, js_site: JsSite
) -> None:
    """The job's story through the API: attempt on http (blocked: an empty JS shell), the
    escalation with its evidence, the browser attempt that succeeded, with their costs."""
    row = await _submit(tier_stack, {"url": f"{js_site.base}/js-only/trail"})  # tier auto
    async with tier_stack.client() as client:
        job = (await client.get(f"/v1/jobs/{row['job_id']}")).json()
    for _ in range(40):  # attempts come from the ledger sink, a moment after the result
        if len(job["history"]) >= 3:
            break
        await asyncio.sleep(0.25)
        async with tier_stack.client() as client:
            job = (await client.get(f"/v1/jobs/{row['job_id']}")).json()
    trail = [
        (e["event"], e.get("tier") or f"{e['from_tier']}->{e['to_tier']}", e.get("outcome"))
        for e in job["history"]
    ]
    assert trail == [
        ("attempt", "http", "blocked"),
        ("escalation", "http->browser", None),
        ("attempt", "browser", "ok"),
    ], job
    assert job["history"][1]["marker"] == "empty_js_shell"
    assert [e.get("credits") for e in job["history"]] == [0, None, 5] and job["credits"] == 5
    assert job["requested_tier"] == "auto" and job["tier"] == "browser"


async def test_a_403_for_clients_without_javascript_escalates_with_the_reason(
    tier_stack: Stack, js_site: JsSite
) -> None:
    row = await _submit(tier_stack, {"url": f"{js_site.base}/needs-js/1", "tier": "http"})
    assert (row["status"], row["tier"], row["http_status"]) == ("succeeded", "browser", 200), row
    (esc,) = await _escalations(tier_stack, {row["job_id"]})
    assert (esc.http_status, esc.marker) == (403, "http_403")
    assert "403" in esc.reason


async def test_after_a_few_jobs_auto_routes_a_js_only_site_straight_to_the_browser(
    tier_stack: Stack, js_site: JsSite
) -> None:
    # Until the router has seen enough blocks, auto jobs start on http and escalate.
    learning = []
    for i in range(6):
        row = await _submit(tier_stack, {"url": f"{js_site.base}/js-only/r{i}"})
        learning.append((row["tier"], row["attempts"]))
        if row["attempts"] == 1:
            break
    assert learning[-1] == ("browser", 1), learning  # learned within a few jobs
    later = [await _submit(tier_stack, {"url": f"{js_site.base}/js-only/s{i}"}) for i in range(3)]
    for r in later:
        assert (r["status"], r["tier"], r["attempts"]) == ("succeeded", "browser", 1), r
        assert r["router_reason"].startswith("learned: http blocked")


async def test_stealth_sessions_keep_cookies_per_tenant_and_screenshots_are_stored(
    tier_stack: Stack, js_site: JsSite
) -> None:
    other_key = await add_tenant(tier_stack.dsn, f"other-{uuid.uuid4().hex[:6]}", 1000)
    opts = {"session_id": "s-1"}
    await _submit(
        tier_stack, {"url": f"{js_site.base}/session/set", "tier": "stealth", "options": opts}
    )
    same = await _submit(
        tier_stack,
        {
            "url": f"{js_site.base}/session/echo",
            "tier": "stealth",
            "options": {**opts, "screenshot": "viewport"},
        },
    )
    other = await _submit(
        tier_stack,
        {"url": f"{js_site.base}/session/echo", "tier": "stealth", "options": opts},
        key=other_key,
    )
    async with tier_stack.client() as client:
        same_body = (await client.get(f"/v1/jobs/{same['job_id']}/content")).text
        shot = await client.get(f"/v1/jobs/{same['job_id']}/screenshot")
    async with tier_stack.client() as client:
        other_body = (
            await client.get(
                f"/v1/jobs/{other['job_id']}/content",
                headers={"Authorization": f"Bearer {other_key}"},
            )
        ).text
    assert "sid=kept" in same_body
    assert "sid=kept" not in other_body  # another tenant's profile, even with the same session id
    assert shot.status_code == 200 and shot.content.startswith(b"\x89PNG\r\n\x1a\n")


# A browser process killed mid-job (issue 3) ---------------------------------------------------


@pytest.fixture(scope="module")
def gated_site() -> Iterator[GatedSite]:
    if not os.access(HEADLESS_SHELL, os.X_OK):
        pytest.fail(f"{HEADLESS_SHELL} is required (make install provides it)")
    with GatedSite() as site:
        yield site


@pytest.fixture(scope="module")
def browser_stack(
    kafka: LocalKafka,
    postgres: LocalPostgres,
    s3: S3Endpoint,
    gated_site: GatedSite,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A browser-tier worker (one Chromium, 4 contexts) whose Chromium this module may kill."""
    env = {
        "SCRAPIFIE_WORKER__SITE_LIMITS": json.dumps(
            {"127.0.0.1": {"rate_per_s": 100, "concurrency": 8}}
        ),
        "SCRAPIFIE_BROWSER__BROWSERS": "1",
        "SCRAPIFIE_BROWSER__CONTEXTS_PER_BROWSER": "4",
        # Short backoff keeps retries in the 5 s delay topic.
        "SCRAPIFIE_WORKER__RETRY_BASE_DELAY_S": "0.5",
    }
    with running_stack(
        kafka,
        postgres,
        s3,
        tmp_path_factory.mktemp("browser-kill"),
        [gated_site.base.removeprefix("http://")],
        env,
        tiers=("browser",),
    ) as st:
        yield st


async def _result_records(st: Stack, job_ids: set[str]) -> dict[str, list[str]]:
    """Statuses of every ``scrape.results`` record of these jobs, up to the topic's end now."""
    topic = st.kafka.topics.results
    spec = next(t for t in SPECS if t.base == "scrape.results")
    parts = [TopicPartition(topic, p) for p in range(spec.partitions)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=st.kafka.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=st.kafka.max_message_bytes + 65536,
    )
    await consumer.start()
    found: dict[str, list[str]] = {j: [] for j in job_ids}
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        end = await consumer.end_offsets(parts)
        while [tp for tp in parts if await consumer.position(tp) < end[tp]]:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    record = default_codec().read(m.value or b"", ScrapeResult)
                    if record.job_id in found:
                        found[record.job_id].append(record.status)
    finally:
        await consumer.stop()
    return found


def _cmd(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace")[:300]


async def _attempts(st: Stack, job_ids: list[str], total: int) -> list[tuple[str, int, str]]:
    """(job_id, attempt, outcome) of these jobs once the ledger sink has ``total`` rows."""
    rows: list[tuple[str, int, str]] = []
    async with await psycopg.AsyncConnection.connect(st.dsn, autocommit=True) as conn:
        for _ in range(240):
            cur = await conn.execute(
                "SELECT job_id, attempt, outcome FROM attempts WHERE job_id = ANY(%s)"
                " ORDER BY job_id, attempt",
                (job_ids,),
            )
            rows = [(r[0], int(r[1]), r[2]) for r in await cur.fetchall()]
            if len(rows) >= total:
                break
            await asyncio.sleep(0.25)
    return rows


async def test_a_chromium_killed_mid_job_is_retried_and_the_pool_recovers(
    browser_stack: Stack, gated_site: GatedSite
) -> None:
    st = browser_stack
    worker = st.procs["worker-browser"]
    async with st.client() as client:
        ids = []
        for i in range(3):
            resp = await client.post("/v1/jobs", json={"url": gated_site.url(i), "tier": "browser"})
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["job_id"])
    # All three pages are mid-load in the worker's Chromium (their images are held back).
    assert await asyncio.to_thread(gated_site.wait_held, 3, 180), st.log_tail()
    browsers = set(chromium_browser_pids(worker.pid))
    assert browsers, [_cmd(p) for p in chromium_pids(worker.pid)]
    # Only Chromium processes under this worker: other tests may run browsers of their own.
    for pid in chromium_pids(worker.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    gated_site.open()

    rows = await wait_final(st.dsn, ids, timeout_s=180)
    assert {r["status"] for r in rows.values()} == {"succeeded"}, rows
    # The killed attempts were retried (transient) in the same tier, by a new browser.
    assert all(r["attempts"] >= 2 and r["tier"] == "browser" for r in rows.values()), rows
    attempts = await _attempts(st, ids, sum(r["attempts"] for r in rows.values()))
    for job_id, row in rows.items():
        mine = [(a, o) for j, a, o in attempts if j == job_id]
        assert [a for a, _ in mine] == list(range(1, row["attempts"] + 1)), attempts
        assert mine[0][1] == "transient" and mine[-1][1] == "ok", attempts
    # Exactly one final status per job: one result record each, none for the killed attempts.
    assert await _result_records(st, set(ids)) == {j: ["succeeded"] for j in ids}

    # The pool recovered: a job submitted now succeeds on its first attempt, same worker.
    async with st.client() as client:
        resp = await client.post(
            "/v1/jobs", json={"url": gated_site.url("after"), "tier": "browser"}
        )
        after = resp.json()["job_id"]
    row = (await wait_final(st.dsn, [after], timeout_s=120))[after]
    assert (row["status"], row["attempts"]) == ("succeeded", 1), row
    assert worker.poll() is None and st.procs["worker-browser"] is worker
    now = set(chromium_browser_pids(worker.pid))
    assert now and not now & browsers, (now, browsers)


# After the routing tests: these http-tier jobs teach the router about the site too.
async def test_formats_of_a_page_javascript_wrote_come_from_the_rendered_page(
    tier_stack: Stack, js_site: JsSite
) -> None:
    body = {
        "url": f"{js_site.base}/js-only/formats",
        "tier": "http",
        "options": {"formats": ["markdown", "text"], "extract": {"p": "p"}},
    }
    row = await _submit(tier_stack, body)
    assert (row["status"], row["tier"]) == ("succeeded", "browser"), row
    async with tier_stack.client() as client:
        job = (await client.get(f"/v1/jobs/{row['job_id']}")).json()
        markdown = (await client.get(job["formats"]["markdown"]["url"])).text
        extracted = (await client.get(job["formats"]["extract"]["url"])).json()
    assert "Rendered by JavaScript." in markdown
    assert extracted["p"].startswith("Rendered by JavaScript.")


async def test_max_credits_stops_escalation_and_charges_nothing(
    tier_stack: Stack, js_site: JsSite
) -> None:
    """The http tier finds an empty shell; the browser tier (5 credits) is over the job's
    max_credits (1): the job fails budget_exceeded, never rendered, never charged."""
    body = {"url": f"{js_site.base}/js-only/budget", "tier": "http", "options": {"max_credits": 1}}
    row = await _submit(tier_stack, body)
    assert (row["status"], row["error_code"]) == ("failed", "budget_exceeded"), row
    assert row["credits"] == 0
    assert "more than options.max_credits (1)" in row["error_message"]
