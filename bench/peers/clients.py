"""Raw async client loops: the ceiling of this machine for fetching the URL list.

Run in a subprocess per measurement (a fresh interpreter, nothing else on its event loop)::

    python -m bench.peers.clients --client aiohttp --concurrency 64 --urls urls.txt

Clients: ``aiohttp`` and ``httpx`` (plain, default settings), and ``fetcher``: the http tier's
own HttpFetcher (aiohttp transport, SSRF guard, redirects by hand, bounded decoding) without
Kafka or the worker around it.

``concurrency`` tasks share one iterator over the URL list; each fetches a URL and reads the
whole body. One client (connection pool of ``concurrency``) serves a warm-up over the first
URLs, then ``--passes`` timed passes over the full list. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

Fetch = Callable[[str], Awaitable[int]]


async def _pass(fetch: Fetch, urls: list[str], concurrency: int) -> tuple[float, int, int]:
    it: Iterator[str] = iter(urls)
    errors = 0
    nbytes = 0

    async def worker() -> None:
        nonlocal errors, nbytes
        for url in it:
            try:
                n = await fetch(url)  # not `nbytes += await ...`: that loses updates
            except Exception:
                errors += 1
            else:
                nbytes += n

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, errors, nbytes


def _aiohttp(concurrency: int) -> tuple[AbstractAsyncContextManager[Any], Callable[[Any], Fetch]]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=30),
    )

    def make(s: aiohttp.ClientSession) -> Fetch:
        async def fetch(url: str) -> int:
            async with s.get(url) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(resp.status)
                return len(body)

        return fetch

    return session, make


def _httpx(concurrency: int) -> tuple[AbstractAsyncContextManager[Any], Callable[[Any], Fetch]]:
    import httpx

    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        trust_env=False,
        timeout=30,
    )

    def make(c: httpx.AsyncClient) -> Fetch:
        async def fetch(url: str) -> int:
            resp = await c.get(url)
            if resp.status_code != 200:
                raise RuntimeError(resp.status_code)
            return len(resp.content)

        return fetch

    return client, make


def _fetcher(concurrency: int) -> tuple[AbstractAsyncContextManager[Any], Callable[[Any], Fetch]]:
    """The http tier's own fetcher (streams.fetchers.http.HttpFetcher), without Kafka: shows how
    much of the pipeline's cost is the fetch itself. Targets are allowed past the SSRF guard."""
    from urllib.parse import urlsplit

    from streams.config import FetchConfig
    from streams.fetchers.base import FetchRequest
    from streams.fetchers.http import HttpFetcher

    urls = _URLS
    allow = sorted({urlsplit(u).netloc for u in urls})
    fields = FetchConfig.model_fields
    config = FetchConfig(
        **({"allow_private": tuple(allow)} if "allow_private" in fields else {}),
        **({"max_connections": concurrency} if "max_connections" in fields else {}),
    )
    fetcher = HttpFetcher(config)

    def make(f: HttpFetcher) -> Fetch:
        async def fetch(url: str) -> int:
            resp = await f.fetch(FetchRequest(url=url))
            if resp.status != 200:
                raise RuntimeError(resp.status)
            return len(resp.body)

        return fetch

    return fetcher, make


_URLS: list[str] = []
CLIENTS = {"aiohttp": _aiohttp, "httpx": _httpx, "fetcher": _fetcher}


async def measure(
    client: str, urls: list[str], concurrency: int, passes: int, warmup: int
) -> dict[str, Any]:
    ctx, make = CLIENTS[client](concurrency)
    async with ctx as session:
        fetch = make(session)
        await _pass(fetch, urls[: max(warmup, concurrency)], concurrency)
        runs = [await _pass(fetch, urls, concurrency) for _ in range(passes)]
    rates = [len(urls) / seconds for seconds, _, _ in runs]
    return {
        "client": client,
        "concurrency": concurrency,
        "pages": len(urls),
        "passes": [round(r, 1) for r in rates],
        "pages_per_s": round(statistics.median(rates), 1),
        "seconds": round(statistics.median(s for s, _, _ in runs), 3),
        "errors": sum(e for _, e, _ in runs),
        "bytes_per_pass": runs[0][2],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peers.clients")
    p.add_argument("--client", choices=sorted(CLIENTS), required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--urls", type=Path, required=True, help="file with one URL per line")
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--warmup", type=int, default=200, help="URLs fetched before timing")
    args = p.parse_args(argv)
    urls = args.urls.read_text().split()
    _URLS[:] = urls
    out = asyncio.run(measure(args.client, urls, args.concurrency, args.passes, args.warmup))
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
