"""Egress pools through real forward proxies (Debian's tinyproxy) on 127.0.0.1, including a
proxy that dies mid-run: every job still succeeds, and credentials never reach a log."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scrapifie.local.kafka import LocalKafka
from scrapifie.local.ports import free_port
from scrapifie.local.postgres import LocalPostgres
from tests.integration.conftest import S3Endpoint, running_stack
from tests.integration.helpers import wait_final

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-proxy-pass"


class Tinyproxy:
    def __init__(self, tmp: Path, name: str) -> None:
        if shutil.which("tinyproxy") is None:
            pytest.fail("tinyproxy is required (make install provides it)")
        self.port = free_port()
        self.conf = tmp / f"{name}.conf"
        self.conf.write_text(
            f"Port {self.port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 200\nAllow 127.0.0.1\n"
            f'LogLevel Warning\nViaProxyName "{name}"\nBasicAuth scrapifie {SECRET}\n'
        )
        self.proc = subprocess.Popen(
            ["tinyproxy", "-d", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return f"http://scrapifie:{SECRET}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class ViaRecorder:
    """A target that records which proxy (Via header) carried each request."""

    def __init__(self) -> None:
        self.via: list[str] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                rec.via.append(self.headers.get("Via", "direct"))
                body = f"<html>{self.path}</html>".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.hostport = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[tuple[Tinyproxy, Tinyproxy]]:
    a, b = Tinyproxy(tmp_path, "proxy-a"), Tinyproxy(tmp_path, "proxy-b")
    yield a, b
    a.stop()
    b.stop()


async def test_jobs_flow_through_the_pool_and_survive_a_dying_proxy(
    kafka: LocalKafka,
    postgres: LocalPostgres,
    s3: S3Endpoint,
    proxies: tuple[Tinyproxy, Tinyproxy],
    tmp_path: Path,
) -> None:
    a, b = proxies
    target = ViaRecorder()
    env = {
        "SCRAPIFIE_EGRESS__POOLS": json.dumps({"datacenter": [a.url, b.url]}),
        "SCRAPIFIE_EGRESS__TIER_DEFAULTS": json.dumps({"http": "datacenter"}),
        "SCRAPIFIE_WORKER__SITE_LIMITS": json.dumps(
            {"127.0.0.1": {"rate_per_s": 200, "concurrency": 8}}
        ),
    }
    try:
        with running_stack(kafka, postgres, s3, tmp_path / "stack", [target.hostport], env) as st:
            async with st.client() as client:
                first = await client.post(
                    "/v1/jobs/batch",
                    json={"jobs": [{"url": f"http://{target.hostport}/a/{i}"} for i in range(100)]},
                )
                ids = [j["job_id"] for j in first.json()["jobs"]]
                await wait_final(st.dsn, ids, timeout_s=60)
                a.stop()  # proxy A dies; the rest must go through B
                second = await client.post(
                    "/v1/jobs/batch",
                    json={"jobs": [{"url": f"http://{target.hostport}/b/{i}"} for i in range(100)]},
                )
                ids2 = [j["job_id"] for j in second.json()["jobs"]]
                rows = await wait_final(st.dsn, ids + ids2, timeout_s=90)
                bad = [r for r in rows.values() if r["status"] != "succeeded"]
                assert not bad, bad[:3]
                metrics = await asyncio.to_thread(
                    lambda: (
                        __import__("httpx")
                        .get(f"http://127.0.0.1:{st.env['SCRAPIFIE_WORKER_METRICS_PORT']}/metrics")
                        .text
                    )
                )
            logs = st.log_tail(lines=100_000)
    finally:
        target.close()

    carriers = Counter(
        "proxy-a" if "proxy-a" in v else "proxy-b" if "proxy-b" in v else v for v in target.via
    )
    assert set(carriers) <= {"proxy-a", "proxy-b"}, carriers  # nothing went direct
    assert carriers["proxy-a"] > 0 and carriers["proxy-b"] > 0
    assert SECRET not in logs and SECRET not in metrics
    assert "scrapifie_egress_requests_total" in metrics
    print("egress figures:", dict(carriers))
