"""What each part of the browser tier's fetch path costs, against a raw Playwright loop.

``python -m bench.browser.costs`` (about 4 minutes): one Chromium (the tier's headless shell,
the pool's ``BASE_ARGS``), C pages at once over the bench corpus on nginx, a new context per
page, each variant in turn for ``--rounds`` rounds (interleaved, so a machine that speeds up or
slows down mid-run shifts every variant alike). Per variant: pages/s and the whole machine's CPU
per page (every process: Python, Playwright's node driver, Chromium, the proxies).

- ``raw``: ``new_context`` → ``new_page`` → ``goto`` (load) → ``content()`` → close;
- ``relay proxy``: the context's proxy is a minimal forward proxy on 127.0.0.1 (no credentials);
- ``relay proxy + credentials``: the same proxy asking for credentials (407), which Playwright
  answers through its request interception;
- ``route``: ``raw`` with a ``context.route("**/*")`` handler that only continues each request;
- ``guard proxy``: ``raw`` behind our guard proxy on a lease's port, as the tier runs;
- ``BrowserFetcher``: the tier's whole fetch path (guard proxy, route handler, listeners, size
  check, headers) without Kafka, from a pool of one browser x C contexts, never recycled;
- ``BrowserFetcher recycled``: the same at the pool's default ``pages_per_browser`` (a new
  Chromium every 100 pages, as the tier runs).

Writes ``bench/results/<stamp>-browser-costs.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.browser.tier import CHROMIUM, chromium_missing
from bench.measure.procs import system_busy_seconds
from bench.pipeline.target import Nginx, build_corpus
from scrapifie.local.ports import free_port

RESULTS = Path(__file__).resolve().parents[1] / "results"
_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b'Proxy-Authenticate: Basic realm="bench"\r\nContent-Length: 0\r\n\r\n'
)


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes, list[bytes]]:
    """(request line target, method + version, header lines) of one proxied request."""
    lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
    method, target, version = lines[0].split(b" ")
    return target, method + b" " + version, [line for line in lines[1:] if line]


def relay_proxy(need_credentials: bool) -> Callable[..., Awaitable[None]]:
    """A minimal forward proxy for plain-HTTP GETs (one request per connection), optionally
    answering the first request of a connection with 407 as an authenticating proxy does."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target, verb, headers = await _read_request(reader)
            authorized = any(h.lower().startswith(b"proxy-authorization:") for h in headers)
            if need_credentials and not authorized:
                writer.write(_407)
                await writer.drain()
                target, verb, headers = await _read_request(reader)
            host, _, path = target.split(b"//", 1)[1].partition(b"/")
            name, _, port = host.partition(b":")
            up_reader, up_writer = await asyncio.open_connection(name.decode(), int(port or 80))
            method, version = verb.split(b" ")
            kept = [h for h in headers if not h.lower().startswith((b"proxy-", b"connection:"))]
            up_writer.write(
                b"%s /%s %s\r\n%s\r\nConnection: close\r\n\r\n"
                % (method, path, version, b"\r\n".join(kept))
            )
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
            up_writer.close()
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return handle


async def measure(
    pages: int, rounds: int, concurrency: int, only: frozenset[str] = frozenset()
) -> dict[str, Any]:
    from playwright.async_api import BrowserContext, Route, async_playwright

    from streams.browser.config import BASE_ARGS, BrowserConfig
    from streams.browser.fetcher import BrowserFetcher
    from streams.browser.guard_proxy import GuardProxy
    from streams.browser.request import BrowserRequest
    from streams.config import FetchConfig
    from streams.fetchers.ssrf import EgressGuard

    workdir = Path(tempfile.mkdtemp(prefix="scrapifie-browser-costs-"))
    corpus = build_corpus(workdir / "corpus", max(pages * rounds, 200))
    with Nginx(corpus, workdir / "nginx", free_port(), workers=1) as nginx:
        urls = corpus.urls(nginx.port)
        hosts = tuple(sorted({u.split("/")[2] for u in urls}))
        plain_port, auth_port = free_port(), free_port()
        servers = [
            await asyncio.start_server(relay_proxy(False), "127.0.0.1", plain_port),
            await asyncio.start_server(relay_proxy(True), "127.0.0.1", auth_port),
        ]
        guard = GuardProxy(EgressGuard(hosts))
        fetcher = BrowserFetcher(
            FetchConfig(allow_private=hosts),
            BrowserConfig(browsers=1, contexts_per_browser=concurrency, pages_per_browser=10**9),
        )
        recycled = BrowserFetcher(
            FetchConfig(allow_private=hosts),
            BrowserConfig(browsers=1, contexts_per_browser=concurrency),
        )
        async with async_playwright() as pw, guard, fetcher, recycled:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=list(BASE_ARGS)
            )

            async def render(ctx: BrowserContext, url: str, route: bool = False) -> None:
                try:
                    if route:

                        async def go_on(r: Route) -> None:
                            await r.continue_()

                        await ctx.route("**/*", go_on)
                    page = await ctx.new_page()
                    resp = await page.goto(url, wait_until="load")
                    if resp is None or resp.status != 200:
                        raise RuntimeError(f"{url}: {resp.status if resp else 'no response'}")
                    await page.content()
                finally:
                    await ctx.close()

            async def raw(url: str) -> None:
                await render(await browser.new_context(), url)

            async def relay(url: str, port: int, credentials: bool) -> None:
                proxy: dict[str, str] = {
                    "server": f"http://127.0.0.1:{port}",
                    "bypass": "<-loopback>",
                }
                if credentials:
                    proxy.update(username="bench", password="bench")
                await render(await browser.new_context(proxy=proxy), url)  # type: ignore[arg-type]

            async def routed(url: str) -> None:
                await render(await browser.new_context(), url, route=True)

            async def guarded(url: str) -> None:
                async with guard.lease() as lease:
                    settings = lease.proxy_settings()
                    await render(await browser.new_context(proxy=settings), url)  # type: ignore[arg-type]

            async def tier(url: str) -> None:
                await fetcher.fetch_browser(BrowserRequest(url=url))

            async def tier_recycled(url: str) -> None:
                await recycled.fetch_browser(BrowserRequest(url=url))

            variants: dict[str, Callable[[str], Awaitable[None]]] = {
                "raw": raw,
                "relay proxy": lambda u: relay(u, plain_port, False),
                "relay proxy + credentials": lambda u: relay(u, auth_port, True),
                "route": routed,
                "guard proxy": guarded,
                "BrowserFetcher": tier,
                "BrowserFetcher recycled": tier_recycled,
            }
            if only:
                variants = {k: v for k, v in variants.items() if k == "raw" or k in only}

            async def run(fn: Callable[[str], Awaitable[None]], todo: list[str]) -> list[float]:
                it = iter(todo)

                async def worker() -> None:
                    for url in it:
                        await fn(url)

                busy, t0 = system_busy_seconds(), time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                wall, cpu = time.perf_counter() - t0, system_busy_seconds() - busy
                return [len(todo) / wall, 1000 * cpu / len(todo)]

            for fn in variants.values():  # warm-up: first contexts, proxies, caches
                await run(fn, urls[: 2 * concurrency])
            samples: dict[str, list[list[float]]] = {name: [] for name in variants}
            offset = 0
            for r in range(rounds):
                for name, fn in variants.items():
                    todo = (urls[offset:] + urls)[:pages]
                    offset = (offset + pages) % len(urls)
                    samples[name].append(await run(fn, todo))
                    rate, cpu = samples[name][-1]
                    print(
                        f"round {r + 1}/{rounds} {name}: {rate:.2f} pages/s, {cpu:.0f} ms CPU/page",
                        file=sys.stderr,
                        flush=True,
                    )
            await browser.close()
        for server in servers:
            server.close()
    out: dict[str, Any] = {"pages": pages, "rounds": rounds, "concurrency": concurrency}
    base_rate = statistics.median(s[0] for s in samples["raw"])
    base_cpu = statistics.median(s[1] for s in samples["raw"])
    out["variants"] = {
        name: {
            "pages_per_s": round(statistics.median(s[0] for s in runs), 2),
            "cpu_ms_per_page": round(statistics.median(s[1] for s in runs)),
            "x_raw_rate": round(statistics.median(s[0] for s in runs) / base_rate, 2),
            "extra_cpu_ms_per_page": round(statistics.median(s[1] for s in runs) - base_cpu),
            "samples": [[round(a, 2), round(b)] for a, b in runs],
        }
        for name, runs in samples.items()
    }
    return out


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['concurrency']} pages at once, {result['pages']} pages x {result['rounds']} "
        "interleaved rounds per variant (medians)",
        "",
        "| variant | pages/s | x raw | machine CPU ms/page | vs raw |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, v in result["variants"].items():
        lines.append(
            f"| {name} | {v['pages_per_s']:.2f} | {v['x_raw_rate']:.2f}x | "
            f"{v['cpu_ms_per_page']} | {v['extra_cpu_ms_per_page']:+d} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.browser.costs", description=__doc__)
    parser.add_argument("--pages", type=int, default=60, help="pages per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--only", default="", help="comma-separated variants besides raw (default: all)"
    )
    args = parser.parse_args(argv)
    missing = chromium_missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    only = frozenset(v.strip() for v in args.only.split(",") if v.strip())
    result = asyncio.run(measure(args.pages, args.rounds, args.concurrency, only))
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"{stamp}-browser-costs.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\n(written to {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
