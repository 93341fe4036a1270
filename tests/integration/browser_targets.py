"""Local pages for the browser tiers (127.0.0.1 only), and /proc helpers to find Chromium.

The site counts requests per path (``hits``) so tests can prove what a browser did or did not
request, and it can hold requests open (``/stall``) until the site shuts down. Probe pages
(``/redirect``, ``/probe/...``) point the browser at other ports; :class:`PortWatch` and
:class:`UdpWatch` count what reaches such a port.

Run ``python -m tests.integration.browser_targets`` to serve it in its own process (benchmarks):
it prints ``port N`` and serves until its stdin closes.
"""

from __future__ import annotations

import base64
import html
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.integration.targets import page

# A 1x1 transparent PNG.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

PAGES: dict[str, str] = {
    # Scripts that replace the serializers we read the rendered HTML with.
    "/huge-serializer": """<!doctype html><html><body><p>small</p><script>
Object.defineProperty(Element.prototype, "outerHTML", {get() { return "x".repeat(3000000); }});
</script></body></html>""",
    "/broken-serializer": """<!doctype html><html><body><p>small</p><script>
Object.defineProperty(Element.prototype, "outerHTML", {get() { throw new Error("no"); }});
</script></body></html>""",
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
    # Reports what localStorage held for the site before the page ran; ?set=V stores V.
    "/storage": """<!doctype html><html><body><pre id="s"></pre>
<script>
var before = localStorage.getItem("k") || "";
var v = new URLSearchParams(location.search).get("set");
if (v) localStorage.setItem("k", v);
document.getElementById("s").textContent = "storage=[" + before + "]";
</script></body></html>""",
    "/guarded-image": """<!doctype html><html><body><p>has a denied image</p>
<img src="/img/denied.png"></body></html>""",
    "/slow": """<!doctype html><html><body><p>slow page</p></body></html>""",
}


# Probe pages: each sets <div id="done"> once its probe has run, so a test can wait for that.
_DONE = "document.body.insertAdjacentHTML('beforeend', '<div id=done></div>')"


def _probe(kind: str, target: str) -> str:
    """A page that makes the browser reach for ``target`` (``host:port``) in one way."""
    t = html.escape(target, quote=True)
    if kind == "websocket":
        return f"""<!doctype html><html><body><p>websocket probe</p><script>
var ws = new WebSocket("ws://{t}/socket");
ws.onerror = ws.onclose = function () {{ {_DONE}; }};
ws.onopen = function () {{ document.title = "open"; ws.close(); }};
</script></body></html>"""
    if kind == "subresources":
        return f"""<!doctype html><html><head>
<link rel="preconnect" href="http://{t}"><link rel="dns-prefetch" href="//{t}">
<link rel="prefetch" href="http://{t}/prefetch"></head><body><p>subresource probe</p>
<img src="http://{t}/img.png" onerror="{_DONE}" onload="{_DONE}"></body></html>"""
    if kind == "webrtc":
        host, _, port = target.rpartition(":")
        return f"""<!doctype html><html><body><p>webrtc probe</p><script>
var pc = new RTCPeerConnection({{iceServers: [{{urls: "stun:{html.escape(host)}:{int(port)}"}}]}});
pc.createDataChannel("probe");
pc.onicegatheringstatechange = function () {{
  if (pc.iceGatheringState === "complete") {{ {_DONE}; }}
}};
pc.createOffer().then(function (offer) {{ return pc.setLocalDescription(offer); }});
</script></body></html>"""
    raise ValueError(kind)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: BrowserSiteServer

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        query = parse_qs(urlsplit(self.path).query)
        srv = self.server
        with srv.lock:
            srv.hits[path] += 1
        if path == "/redirect":  # 302 to ?to=URL
            self._send(302, b"", "text/plain", [("Location", query["to"][0])])
        elif path.startswith("/probe/"):  # /probe/<kind>?target=host:port
            body = _probe(path.removeprefix("/probe/"), query["target"][0]).encode()
            self._send(200, body, "text/html; charset=utf-8")
        elif path == "/slow":
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
        elif path == "/cacheable":  # a browser may answer it from its cache for an hour
            self._send(
                200,
                b"<!doctype html><html><body>cacheable</body></html>",
                "text/html; charset=utf-8",
                [("Cache-Control", "max-age=3600")],
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


class PortWatch:
    """A TCP port on 127.0.0.1 that counts every connection reaching it (and answers each with a
    small HTTP page, so a browser that got through would finish its request)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self.target = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n"
                        b"Connection: close\r\n\r\n<p>secret</p>"
                    )
                except OSError:
                    pass

    def __enter__(self) -> PortWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join()


class UdpWatch:
    """A UDP port on 127.0.0.1 that counts the datagrams reaching it (a STUN server's port)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.target = f"127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._datagrams = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    @property
    def datagrams(self) -> int:
        with self._lock:
            return self._datagrams

    def _read(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._datagrams += 1

    def __enter__(self) -> UdpWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


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
    """Chromium *browser* processes under ``root`` (helpers carry a ``--type=`` flag; the
    crash handler, /usr/lib/chromium/chrome_crashpad_handler, is another program)."""
    # Chromium rewrites its helpers' argv into one space-separated string.
    return [
        p
        for p in chromium_pids(root)
        if (c := _cmdline(p))
        and os.path.basename(c[0].split(" ", 1)[0]) in ("chromium", "chromium-headless-shell")
        and "--type=" not in " ".join(c)
    ]


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


# A page whose load waits on a gate (test_tiers.py: Chromium killed mid-job) ------------------

GATED_PAGE = """<!doctype html><html><head><title>gated {n}</title></head><body>
<p>{text}</p><img src="/gated/asset.png?n={n}" width="10" height="10"></body></html>"""


class _GatedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: GatedSiteServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        srv = self.server
        if path.startswith("/gated/page/"):
            n = path.rsplit("/", 1)[1]
            body = GATED_PAGE.format(n=n, text="a page that loads slowly " * 20).encode()
            self._send(200, body, "text/html; charset=utf-8")
        elif path == "/gated/asset.png":
            # The page's load event waits for this image: hold it until the gate opens.
            with srv.cond:
                srv.held += 1
                srv.cond.notify_all()
            srv.gate.wait(srv.hold_s)
            with srv.cond:
                srv.held -= 1
                srv.served += 1
            self._send(200, PIXEL, "image/png")
        else:
            self._send(404, b"not here", "text/plain")  # robots.txt included: no rules

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away (killed) while the image was held

    def log_message(self, format: str, *args: Any) -> None:
        pass


class GatedSiteServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hold_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _GatedHandler)
        self.cond = threading.Condition()
        self.gate = threading.Event()
        self.hold_s = hold_s
        self.held = 0  # image requests waiting for the gate now
        self.served = 0


class GatedSite:
    """Pages ``/gated/page/<n>`` on 127.0.0.1 that do not finish loading until the test says so.

    Each page has one image, which the site holds back until :meth:`open` (or ``hold_s``, a
    safety limit): while the gate is closed every page is mid-load (``goto`` waiting for
    ``load``), for as long as the test needs, with no timing involved. Once open, images are
    answered at once. A context manager.
    """

    def __init__(self, hold_s: float = 120.0) -> None:
        self._server = GatedSiteServer(hold_s)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, n: int | str) -> str:
        return f"{self.base}/gated/page/{n}"

    def wait_held(self, n: int, timeout_s: float) -> bool:
        """Whether ``n`` image requests are held at once within ``timeout_s``."""
        with self._server.cond:
            return self._server.cond.wait_for(lambda: self._server.held >= n, timeout_s)

    def open(self) -> None:
        self._server.gate.set()

    def __enter__(self) -> GatedSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
