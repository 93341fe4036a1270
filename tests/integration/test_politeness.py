"""Politeness on the real pipeline: 500 URLs over 5 local sites (127.0.0.2-6), each with its own
robots.txt; per-site rate limits hold and robots-disallowed pages are never fetched."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from scrapifie.local.kafka import LocalKafka
from scrapifie.local.postgres import LocalPostgres
from tests.integration.conftest import S3Endpoint, running_stack
from tests.integration.helpers import wait_final

pytestmark = pytest.mark.integration

RATE = 25.0
ROBOTS = {
    "127.0.0.2": "User-agent: *\nDisallow: /private\n",
    "127.0.0.3": "User-agent: Scrapifie\nDisallow: /\n\nUser-agent: *\nAllow: /\n",
    "127.0.0.4": "User-agent: *\nCrawl-delay: 0.25\n",
    "127.0.0.5": None,  # 404
    "127.0.0.6": None,
}
COUNTS = {"127.0.0.2": 120, "127.0.0.3": 60, "127.0.0.4": 40, "127.0.0.5": 140, "127.0.0.6": 140}


class Site:
    def __init__(self, ip: str, robots: str | None) -> None:
        self.hits: list[tuple[float, str]] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                site.hits.append((time.monotonic(), self.path))
                if self.path == "/robots.txt" and robots is not None:
                    body, status = robots.encode(), 200
                elif self.path == "/robots.txt":
                    body, status = b"no robots here", 404
                else:
                    body, status = f"<html>{self.path}</html>".encode(), 200
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((ip, 0), Handler)
        self.server.daemon_threads = True
        self.hostport = f"{ip}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def sites() -> Iterator[dict[str, Site]]:
    made = {ip: Site(ip, robots) for ip, robots in ROBOTS.items()}
    yield made
    for s in made.values():
        s.close()


def max_rate(times: list[float]) -> int:
    """Most request starts seen in any 1-second window."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_500_urls_over_5_sites_respect_limits_and_robots(
    kafka: LocalKafka,
    postgres: LocalPostgres,
    s3: S3Endpoint,
    sites: dict[str, Site],
    tmp_path: Path,
) -> None:
    limits = {ip: {"rate_per_s": RATE, "concurrency": 2} for ip in sites}
    env = {"SCRAPIFIE_WORKER__SITE_LIMITS": json.dumps(limits)}
    urls: list[str] = []
    for ip, n in COUNTS.items():
        base = f"http://{sites[ip].hostport}"
        for i in range(n):
            private = ip == "127.0.0.2" and i % 6 == 0
            urls.append(f"{base}/private/{i}" if private else f"{base}/page/{i}")
    assert len(urls) == 500

    with running_stack(
        kafka, postgres, s3, tmp_path, [s.hostport for s in sites.values()], env
    ) as st:
        async with st.client() as client:
            resp = await client.post("/v1/jobs/batch", json={"jobs": [{"url": u} for u in urls]})
            assert resp.status_code == 202, resp.text
            job_ids = [j["job_id"] for j in resp.json()["jobs"]]
        rows = await wait_final(st.dsn, job_ids, timeout_s=180)

    by_url = {rows[j]["url"]: rows[j] for j in job_ids}
    disallowed = [u for u in urls if "/private/" in u or "127.0.0.3" in u]
    for u in disallowed:
        assert (by_url[u]["status"], by_url[u]["error_code"]) == ("failed", "robots_disallowed"), u
    for u in set(urls) - set(disallowed):
        assert by_url[u]["status"] == "succeeded", by_url[u]

    report: dict[str, Any] = {}
    for ip, site in sites.items():
        paths = [p for _, p in site.hits]
        assert paths.count("/robots.txt") == 1, (ip, "robots.txt fetched once per site")
        fetched_disallowed = [
            p
            for p in paths
            if p.startswith("/private") or (ip == "127.0.0.3" and p != "/robots.txt")
        ]
        assert fetched_disallowed == [], (ip, fetched_disallowed)
        starts = [t for t, p in site.hits if p != "/robots.txt"]
        report[ip] = {"requests": len(starts), "max_per_s": max_rate(starts)}
        limit = 1 / 0.25 if ip == "127.0.0.4" else RATE  # Crawl-delay 0.25 s beats the rate
        # Starts are spaced by the limiter; +2 allows for arrival jitter at the server.
        assert report[ip]["max_per_s"] <= limit + 2, (ip, report[ip])
    print("politeness figures:", json.dumps(report))


async def test_a_busy_site_does_not_hold_up_other_sites(
    kafka: LocalKafka,
    postgres: LocalPostgres,
    s3: S3Endpoint,
    sites: dict[str, Site],
    tmp_path: Path,
) -> None:
    slow, fast = sites["127.0.0.5"], sites["127.0.0.6"]
    limits = {
        "127.0.0.5": {"rate_per_s": 4, "concurrency": 1},
        "127.0.0.6": {"rate_per_s": 1000, "concurrency": 8},
    }
    env = {
        "SCRAPIFIE_WORKER__SITE_LIMITS": json.dumps(limits),
        "SCRAPIFIE_WORKER__MAX_SITE_BACKLOG": "4",
        "SCRAPIFIE_WORKER__MAX_IN_FLIGHT": "16",
    }
    with running_stack(kafka, postgres, s3, tmp_path, [slow.hostport, fast.hostport], env) as st:
        async with st.client() as client:
            resp = await client.post(
                "/v1/jobs/batch",
                json={"jobs": [{"url": f"http://{slow.hostport}/busy/{i}"} for i in range(40)]},
            )
            slow_ids = [j["job_id"] for j in resp.json()["jobs"]]
            resp = await client.post(
                "/v1/jobs/batch",
                json={"jobs": [{"url": f"http://{fast.hostport}/quick/{i}"} for i in range(20)]},
            )
            fast_ids = [j["job_id"] for j in resp.json()["jobs"]]
        rows = await wait_final(st.dsn, slow_ids + fast_ids, timeout_s=120)
        async with httpx.AsyncClient(trust_env=False) as http:
            port = st.env["SCRAPIFIE_WORKER_METRICS_PORT"]
            metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert all(r["status"] == "succeeded" for r in rows.values())
    slow_done = sorted(rows[j]["finished_at"] for j in slow_ids)
    fast_done = max(rows[j]["finished_at"] for j in fast_ids)
    # Submitted after 40 slow jobs, the fast site's 20 all finish before the slow site is even
    # a quarter done: the slow site's backlog went to a delay topic, not into the window.
    assert fast_done < slow_done[10], (fast_done, slow_done[:12])
    assert 'scrapifie_deferred_total{delay_s="5",reason="site_backlog",tier="http"}' in metrics
