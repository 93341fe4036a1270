"""Scrapy fetching the URL list: the baseline the http tier is compared with.

Run in a subprocess (Twisted's reactor runs once per process)::

    python -m bench.peers.scrapy_client --concurrency 64 --urls urls.txt

Settings: ``CONCURRENT_REQUESTS`` = ``CONCURRENT_REQUESTS_PER_DOMAIN`` = concurrency, robots.txt
off, no download delay, no auto-throttle, ``CONCURRENT_ITEMS=1``; the spider yields one small
item per page (url, status, body length). Elapsed time runs from ``spider_opened`` to the last
item, so interpreter start and engine shutdown are not counted. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any


def run(urls: list[str], concurrency: int, concurrent_items: int) -> dict[str, Any]:
    import scrapy
    from scrapy import signals
    from scrapy.crawler import CrawlerProcess
    from scrapy.http import Response

    class BenchSpider(scrapy.Spider):
        name = "bench"

        async def start(self) -> AsyncIterator[scrapy.Request]:  # Scrapy >= 2.13
            for request in self.start_requests():
                yield request

        def start_requests(self) -> Iterator[scrapy.Request]:  # Scrapy < 2.13
            for url in urls:
                yield scrapy.Request(url, dont_filter=True, callback=self.parse)

        def parse(self, response: Response, **kwargs: Any) -> Iterator[dict[str, Any]]:
            yield {"url": response.url, "status": response.status, "bytes": len(response.body)}

    marks: dict[str, float] = {}
    counts = {"items": 0}

    def opened(spider: scrapy.Spider) -> None:
        marks["opened"] = time.perf_counter()

    def scraped(item: Any, response: Any, spider: scrapy.Spider) -> None:
        counts["items"] += 1
        marks["last_item"] = time.perf_counter()

    settings = {
        "CONCURRENT_REQUESTS": concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency,
        "CONCURRENT_ITEMS": concurrent_items,
        "DOWNLOAD_DELAY": 0,
        "RANDOMIZE_DOWNLOAD_DELAY": False,
        "ROBOTSTXT_OBEY": False,
        "AUTOTHROTTLE_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "ERROR",
        "USER_AGENT": "scrapifie-bench (scrapy)",
    }
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(BenchSpider)
    crawler.signals.connect(opened, signal=signals.spider_opened)
    crawler.signals.connect(scraped, signal=signals.item_scraped)
    process.crawl(crawler)
    process.start()
    stats = crawler.stats.get_stats() if crawler.stats else {}
    seconds = marks.get("last_item", 0.0) - marks.get("opened", 0.0)
    ok = int(stats.get("downloader/response_status_count/200", 0))
    reactor = ""
    try:
        from twisted.internet import reactor as r

        reactor = f"{type(r).__module__}.{type(r).__name__}"
    except Exception:
        pass
    return {
        "client": "scrapy",
        "scrapy_version": scrapy.__version__,
        "reactor": reactor,
        "concurrency": concurrency,
        "concurrent_items": concurrent_items,
        "pages": counts["items"],
        "ok": ok,
        "errors": len(urls) - ok,
        "seconds": round(seconds, 3),
        "pages_per_s": round(counts["items"] / seconds, 1) if seconds > 0 else 0.0,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peers.scrapy_client")
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--urls", type=Path, required=True, help="file with one URL per line")
    p.add_argument("--concurrent-items", type=int, default=1)
    args = p.parse_args(argv)
    urls = args.urls.read_text().split()
    json.dump(run(urls, args.concurrency, args.concurrent_items), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
