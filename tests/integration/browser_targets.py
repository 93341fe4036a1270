"""Local pages for the browser tiers (127.0.0.1 only), and /proc helpers to find Chromium.

The site counts requests per path (``hits``) so tests can prove what a browser did or did not
request, and it can hold requests open (``/stall``) until the site shuts down.

Run ``python -m tests.integration.browser_targets`` to serve it in its own process (benchmarks):
it prints ``port N`` and serves until its stdin closes.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.integration.targets import page

# A 1x1 transparent PNG.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

PAGES: dict[str, str] = {
    "/js": """<!doctype html><html><head><title>js</title></head><body>
<div id="root"></div>
<script>
document.getElementById("root").innerHTML = '<p id="out">rendered by ' + 'javascript</p>';
</script></body></html>""",
    "/delayed": """<!doctype html><html><body><div id="root">waiting</div>
<script>
setTimeout(function () {
  var d = document.createElement("div"); d.id = "late"; d.textContent = "late " + "content";
  document.body.appendChild(d);
}, 300);
</script></body></html>""",
    "/tall": """<!doctype html><html><body style="margin:0">
<div style="height:5000px;background:linear-gradient(#fff,#000)">tall</div></body></html>""",
    "/with-image": """<!doctype html><html><body><p>image below</p>
<img src="/img/pixel.png" width="10" height="10"></body></html>""",
    "/never": """<!doctype html><html><body><p>never loads</p><img src="/stall"></body></html>""",
    "/cookies": """<!doctype html><html><body><pre id="c"></pre>
<script>document.getElementById("c").textContent = "cookies=[" + document.cookie + "]";</script>
</body></html>""",
    "/guarded-image": """<!doctype html><html><body><p>has a denied image</p>
<img src="/img/denied.png"></body></html>""",
    "/slow": """<!doctype html><html><body><p>slow page</p></body></html>""",
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: BrowserSiteServer

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        srv = self.server
        with srv.lock:
            srv.hits[path] += 1
        if path == "/slow":
            with srv.lock:
                srv.in_flight += 1
                srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            time.sleep(0.2)
            with srv.lock:
                srv.in_flight -= 1
            self._send(200, PAGES[path].encode(), "text/html; charset=utf-8")
        elif path in PAGES:
            self._send(200, PAGES[path].encode(), "text/html; charset=utf-8")
        elif path.startswith("/img/"):
            self._send(200, PIXEL, "image/png")
        elif path.startswith("/page/"):
            self._send(200, page(int(path.rsplit("/", 1)[1])), "text/html; charset=utf-8")
        elif path == "/set-cookie":
            self._send(
                200,
                b"<!doctype html><html><body>cookies set</body></html>",
                "text/html; charset=utf-8",
                [
                    ("Set-Cookie", "sess=s1; Path=/"),
                    ("Set-Cookie", "keep=k1; Path=/; Max-Age=3600"),
                ],
            )
        elif path == "/headers":
            seen = {k.lower(): v for k, v in self.headers.items()}
            body = f"<!doctype html><html><body><pre>{json.dumps(seen)}</pre></body></html>"
            self._send(200, body.encode(), "text/html; charset=utf-8")
        elif path == "/download":
            self._send(
                200, b"a,b\n1,2\n", "text/csv", [("Content-Disposition", "attachment; x.csv")]
            )
        elif path == "/json":
            self._send(200, b'{"hello": "world"}', "application/json")
        elif path == "/stall":
            srv.stalled.set()
            srv.release.wait(60)  # held open until the site shuts down
        elif path == "/missing":
            self._send(404, b"<html><body>not here</body></html>", "text/html")
        else:
            self._send(404, b"unknown", "text/plain")

    def _send(
        self, status: int, body: bytes, ctype: str, extra: list[tuple[str, str]] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Target", "browser-site")
            for k, v in extra or []:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away (killed, or the context closed)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class BrowserSiteServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.stalled = threading.Event()
        self.release = threading.Event()


class BrowserSite:
    """The browser test site on 127.0.0.1 (a context manager)."""

    def __init__(self) -> None:
        self._server = BrowserSiteServer()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def server(self) -> BrowserSiteServer:
        return self._server

    def url(self, path: str) -> str:
        return self.base + path

    def hits(self, path: str) -> int:
        with self._server.lock:
            return self._server.hits[path]

    def __enter__(self) -> BrowserSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


# /proc helpers ------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(root: int | None = None) -> list[int]:
    """Every descendant of ``root`` (default: this process), not including it."""
    kids = _children()
    out: list[int] = []
    todo = [os.getpid() if root is None else root]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def chromium_pids(root: int | None = None) -> list[int]:
    """Chromium processes (browser and helpers) under ``root``."""
    return [p for p in process_tree(root) if (c := _cmdline(p)) and "chromium" in c[0]]


def chromium_browser_pids(root: int | None = None) -> list[int]:
    """Chromium *browser* processes under ``root`` (helpers carry a ``--type=`` flag)."""
    # Chromium rewrites its helpers' argv into one space-separated string.
    return [p for p in chromium_pids(root) if "--type=" not in " ".join(_cmdline(p))]


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory_kib(root: int | None = None, exclude: int | None = None) -> tuple[int, int]:
    """(sum of VmRSS, sum of PSS) in KiB of ``root`` and all its descendants.

    RSS counts pages shared between Chromium's processes once per process (an overestimate);
    PSS splits shared pages between their users (what the tree really costs). The subtree of
    ``exclude`` is left out.
    """
    me = os.getpid() if root is None else root
    skip = set() if exclude is None else {exclude, *process_tree(exclude)}
    pids = [p for p in [me, *process_tree(me)] if p not in skip]
    return sum(_status_kib(p, "VmRSS") for p in pids), sum(_pss_kib(p) for p in pids)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG; raises ValueError if ``data`` is not one."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def main() -> None:
    with BrowserSite() as site:
        print(f"port {site.server.server_address[1]}", flush=True)
        sys.stdin.read()  # until the parent closes our stdin


if __name__ == "__main__":
    main()
