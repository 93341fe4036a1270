"""Scrapifie's benchmark harness: `make bench` or `python -m bench`, never part of `make test`.

One run starts a local nginx target with a generated corpus on several 127.0.0.x addresses and
measures, over the same URL list: raw aiohttp and httpx loops (this machine's ceiling), Scrapy,
the http tier end to end (Kafka → worker → ``scrape.results`` → sinks → PostgreSQL rows and
objects), the sinks alone from pre-filled topics, and the peak RSS of every process. Results go
to ``bench/results/`` as JSON, a Markdown table and a PNG chart. See ``bench/README.md``.
"""

RESULTS_SCHEMA_VERSION = 1
