"""Things the fault tests break on purpose: a slow target site, an S3 endpoint that can be made
to answer 503 or stop listening, and a stack of scrapifie processes whose every backend
(Kafka broker, PostgreSQL server, object store) belongs to the fault suite alone."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import httpx

from schemas.kafka import KafkaConfig
from scrapifie.local.kafka import LocalKafka
from scrapifie.local.postgres import LocalPostgres
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
@dataclass
class FaultStack:
    """Worker, sinks and gateway as subprocesses (started as a user starts them) over a
    private topic prefix, database and bucket on the fault suite's own backends."""

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
    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    proc_env: dict[str, dict[str, str]] = field(default_factory=dict)

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start (or restart, with the same arguments and variables) process ``name``."""
        args = args or self.commands[name]
        self.commands[name] = args
        if env is not None:
            self.proc_env[name] = env
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "scrapifie", *args],
            env={**self.env, **self.proc_env.get(name, {})},
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
        log.close()
        if name in self.procs:
            self.restarts[name] = self.restarts.get(name, 0) + 1
        self.procs[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self, name: str) -> None:
        """SIGKILL one process (no clean shutdown) and reap it."""
        self.stop(name, signal.SIGKILL)

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def metric(self, port_env: str, name: str) -> float | None:
        """Sum of a Prometheus metric's samples on a process's /metrics endpoint."""
        try:
            text = httpx.get(
                f"http://127.0.0.1:{self.env[port_env]}/metrics", timeout=2, trust_env=False
            ).text
        except httpx.HTTPError:
            return None
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")
        ]
        return sum(values) if values else None

    def client(self, api_key: str | None = None, timeout_s: float = 30) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.gateway,
            headers={"Authorization": f"Bearer {api_key or self.api_key}"},
            trust_env=False,
            timeout=timeout_s,
        )

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}\n{self.log_tail()}")
            try:
                resp = httpx.get(f"{self.gateway}/readyz", timeout=2, trust_env=False)
                if resp.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"gateway not ready in {timeout_s}s\n{self.log_tail()}")

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

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of each process's log, workers first, without the reconnect lines
        an outage floods them with (a CI excerpt once held nothing but those)."""
        out = []
        order = {"worker": 0, "sink": 1, "router": 2}
        for f in sorted(self.logs.glob("*.log"), key=lambda f: (order.get(f.stem, 9), f.name)):
            text = [
                line
                for line in f.read_text(errors="replace").splitlines()
                if not any(noise in line for noise in _RECONNECT_NOISE)
            ]
            out.append(f"==== {f.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


_RECONNECT_NOISE = (
    "Unable connect to node",
    "Unable to update metadata",
    "Failed fetch messages from",
    "Group Coordinator Request failed",
)


def base_env() -> dict[str, str]:
    """The test runner's environment without any SCRAPIFIE_ setting of its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SCRAPIFIE_")}
