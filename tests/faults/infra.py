"""Things the fault tests break on purpose: a slow target site, an S3 endpoint that can be made
to answer 503 or stop listening, and a stack of scrapifie processes whose every backend
(Kafka broker, PostgreSQL server, object store) belongs to the fault suite alone."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import httpx

from schemas.kafka import KafkaConfig
from scrapifie.local.kafka import LocalKafka
from scrapifie.local.postgres import LocalPostgres
from scrapifie.testing.procstack import (
    ProcStack,
    base_env,  # noqa: F401 - the fault tests import it here
    metric_sum,
)
from tests.integration.targets import page

REPO = Path(__file__).resolve().parents[2]


# -- a slow target site ---------------------------------------------------------------------------
def slow_delay_s(n: int) -> float:
    """Deterministic 0.5-2.0 s per page number, spread evenly."""
    return 0.5 + (n * 7919 % 1500) / 1000


class _SiteHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path.startswith("/slow/"):
            n = int(path.rsplit("/", 1)[1])
            time.sleep(slow_delay_s(n))
            self._send(200, page(n))
        elif path.startswith("/page/"):
            self._send(200, page(int(path.rsplit("/", 1)[1])))
        else:  # /robots.txt among others: no rules
            self._send(404, b"not here", "text/plain")

    def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the worker was SIGKILLed mid-request
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connections cut by a SIGKILLed worker are expected here


class SlowSite:
    """127.0.0.1 target: ``/slow/N`` answers page N after 0.5-2 s, ``/page/N`` at once."""

    def __init__(self) -> None:
        self._server = _QuietServer(("127.0.0.1", 0), _SiteHandler)
        self._server.daemon_threads = True
        self._server.request_queue_size = 256
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def base(self) -> str:
        return f"http://{self.hostport}"

    def __enter__(self) -> SlowSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


# -- an S3 endpoint that fails on demand ----------------------------------------------------------
Mode = Literal["pass", "503", "down"]
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


class _ProxyServer(_QuietServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: S3Proxy


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def setup(self) -> None:
        super().setup()
        self.server.proxy.track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.proxy.track(self.connection, add=False)

    def _relay(self) -> None:
        proxy = self.server.proxy
        body = self._body()
        proxy.requests += 1
        if proxy.mode == "down":
            self.close_connection = True
            return
        if proxy.mode == "503":
            proxy.failed += 1
            msg = b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(msg)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(msg)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            resp = upstream.getresponse()
            data = resp.read()
        finally:
            upstream.close()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP and k.lower() != "content-length":
                self.send_header(k, v)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

    def log_message(self, format: str, *args: Any) -> None:
        pass


class S3Proxy:
    """An HTTP proxy in front of moto's S3 server on a fixed port.

    ``mode``: ``pass`` relays, ``503`` answers every request 503 ServiceUnavailable, ``down``
    stops listening (connections refused) and cuts the open ones, like a stopped server.
    """

    def __init__(self, upstream_port: int, port: int) -> None:
        self.upstream_port = upstream_port
        self.port = port
        self.mode: Mode = "pass"
        self.requests = 0
        self.failed = 0
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server: _ProxyServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def set_mode(self, mode: Mode) -> None:
        if mode == "down":
            self.mode = "down"
            self._stop_listening()
            with self._lock:
                conns = list(self._conns)
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        else:
            if self._server is None:
                self._listen()
            self.mode = mode

    def _listen(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                server = _ProxyServer(("127.0.0.1", self.port), _ProxyHandler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        server.proxy = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = None

    def __enter__(self) -> S3Proxy:
        self._listen()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_listening()


# -- the stack under test ----------------------------------------------------------------------
@dataclass(kw_only=True)
class FaultStack(ProcStack):
    """Worker, sinks and gateway as subprocesses (started as a user starts them) over a
    private topic prefix, database and bucket on the fault suite's own backends.

    ``ProcStack`` starts, stops, kills and restarts them (``start(name)`` again: the same
    arguments and variables); this adds the backends and what the tests read."""

    kafka: KafkaConfig
    broker: LocalKafka
    pg: LocalPostgres
    dsn: str
    s3: S3Proxy
    bucket: str
    gateway: str
    api_key: str
    tenant: str
    initial_credits: int

    # ``log_tail``: workers first, without the reconnect lines an outage floods the logs with
    # (a CI excerpt once held nothing but those).
    tail_first = ("worker", "sink", "router")
    tail_noise = (
        "Unable connect to node",
        "Unable to update metadata",
        "Failed fetch messages from",
        "Group Coordinator Request failed",
    )

    def metric(self, port_env: str, name: str) -> float | None:
        """Sum of a Prometheus metric's samples on a process's /metrics endpoint."""
        return metric_sum(self.env[port_env], name)

    def client(self, api_key: str | None = None, timeout_s: float = 30) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.gateway,
            headers={"Authorization": f"Bearer {api_key or self.api_key}"},
            trust_env=False,
            timeout=timeout_s,
        )

    def wait_ready(self, timeout_s: float = 90) -> None:
        self.wait_for(f"{self.gateway}/readyz", timeout_s)

    def verify(self, since: str = "2 hours", timeout_s: float = 120) -> tuple[int, dict[str, Any]]:
        """Run ``scrapifie verify --json`` exactly as an operator would; (exit code, report)."""
        proc = subprocess.run(
            [sys.executable, "-m", "scrapifie", "verify", "--json", "--since", since],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if proc.returncode not in (0, 1) or not proc.stdout.strip():
            raise AssertionError(
                f"scrapifie verify exited {proc.returncode}\nstdout: {proc.stdout[-3000:]}\n"
                f"stderr: {proc.stderr[-3000:]}"
            )
        report: dict[str, Any] = json.loads(proc.stdout)
        return proc.returncode, report
