"""Local target sites for integration tests: real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BIG_PAGE_BYTES = 200_000  # /big/<n>: above the size the worker compresses off the event loop


def page(n: int, size: int = 20_000) -> bytes:
    head = f"<html><head><title>Page {n}</title></head><body><h1>Page {n}</h1><p>".encode()
    tail = b"</p></body></html>"
    return head + b"x" * max(0, size - len(head) - len(tail)) + tail


# An article with navigation and a footer around it, links and metadata: the formats' page.
ARTICLE = """<!doctype html><html lang="ja"><head><title>記事のタイトル</title>
<meta name="description" content="日本語の記事">
<meta property="og:title" content="OG タイトル">
<link rel="canonical" href="/article-sjis">
<script type="application/ld+json">{"@type": "Article", "headline": "記事"}</script>
</head><body>
<nav><a href="/">ホーム</a> <a href="/about">概要</a></nav>
<main><article><h1>記事の見出し</h1>
<p>これは本文の最初の段落です。十分な長さの文章がここに続きます。</p>
<ul><li>一つ目</li><li>二つ目</li></ul>
<p>詳しくは<a href="/page/7">七ページ</a>をご覧ください。
価格は<span class="price">1,280</span>円です。</p>
</article></main>
<footer>(c) フッター <a href="/about">概要</a></footer>
</body></html>"""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path.startswith("/page/"):
            body = page(int(path.rsplit("/", 1)[1]))
            self._send(200, body, "text/html; charset=utf-8")
        elif path.startswith("/big/"):
            body = page(int(path.rsplit("/", 1)[1]), BIG_PAGE_BYTES)
            self._send(200, body, "text/html; charset=utf-8")
        elif path == "/legacy-header":  # a header byte that is not UTF-8 (Latin-1 é)
            self._send(200, page(5), "text/html; charset=utf-8", {"X-Legacy": "caf\xe9"})
        elif path == "/nul-header":  # a NUL byte in a header value
            self._send(200, page(6), "text/html; charset=utf-8", {"X-Nul": "a\x00b"})
        elif path.startswith("/random/"):  # n bytes gzip cannot shrink (same bytes for same n)
            n = int(path.rsplit("/", 1)[1])
            self._send(200, random.Random(n).randbytes(n), "application/octet-stream")
        elif path.startswith("/counted/"):  # the page, counting requests per path
            self.server.hits[path] = self.server.hits.get(path, 0) + 1  # type: ignore[attr-defined]
            self._send(200, ARTICLE.encode(), "text/html; charset=utf-8", {"X-Origin": "target"})
        elif path == "/many-nodes":  # 40,000 elements: a quadratic selector takes minutes
            self._send(
                200,
                b"<html><body>" + b"<div><p>x</p></div>" * 40_000 + b"</body></html>",
                "text/html",
            )
        elif path == "/article-sjis":  # a page in Shift_JIS, declared in the header only
            self._send(200, ARTICLE.encode("shift_jis"), "text/html; charset=Shift_JIS")
        elif path == "/redirect":
            self._send(302, b"", "text/plain", {"Location": "/page/0"})
        elif path == "/missing":
            self._send(404, b"not here", "text/plain")
        elif path.startswith("/flaky/"):  # 503 on the first request per path, then the page
            if self._first_time(path):
                self._send(503, b"try later", "text/plain")
            else:
                self._send(200, page(1), "text/html")
        elif path.startswith("/ratelimited/"):  # 429 + Retry-After first, then the page
            if self._first_time(path):
                self._send(429, b"slow down", "text/plain", {"Retry-After": "1"})
            else:
                self._send(200, page(2), "text/html")
        elif path.startswith("/hang/"):  # never answers within any sane deadline
            self.server.hits[path] = self.server.hits.get(path, 0) + 1  # type: ignore[attr-defined]
            time.sleep(5)
            self._send(200, b"too late", "text/plain")
        else:
            self._send(404, b"unknown", "text/plain")

    def _first_time(self, path: str) -> bool:
        hits: dict[str, int] = self.server.hits  # type: ignore[attr-defined]
        hits[path] = hits.get(path, 0) + 1
        return hits[path] == 1

    def _send(
        self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TargetSite:
    """A threaded HTTP/1.1 server on 127.0.0.1 with /page/N, /redirect and /missing."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hits = {}  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def hits(self) -> dict[str, int]:
        """Requests seen per path, for the paths that count them."""
        return self._server.hits  # type: ignore[attr-defined, no-any-return]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> TargetSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
