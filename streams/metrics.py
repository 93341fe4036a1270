"""Prometheus metrics of the stream processors. Core code calls these; it never formats."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.fetch_outcome = Counter(
            "scrapifie_fetch_outcome_total",
            "Attempts by tier and outcome (ok, transient, blocked, fatal) and error code.",
            ["tier", "outcome", "code"],
            registry=registry,
        )
        self.fetch_seconds = Histogram(
            "scrapifie_fetch_seconds",
            "Duration of one fetch attempt.",
            ["tier"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.cache_lookups = Counter(
            "scrapifie_cache_lookups_total",
            "Result-cache lookups of jobs with max_age_s, by result (hit, miss, unavailable).",
            ["tier", "result"],
            registry=registry,
        )
        self.fetched_bytes = Counter(
            "scrapifie_fetched_bytes_total",
            "Decoded body bytes fetched.",
            ["tier"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "scrapifie_fetches_in_flight", "Fetches running now.", ["tier"], registry=registry
        )
        self.jobs_in_progress = Gauge(
            "scrapifie_jobs_in_progress",
            "Jobs taken and not finished: fetching, waiting for a site slot, or waiting for Kafka "
            "to acknowledge their output (at most the worker's max_in_flight).",
            ["tier"],
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            "scrapifie_assigned_partitions",
            "Partitions of each topic this process consumes, as of its latest rebalance.",
            ["topic"],
            registry=registry,
        )
        self.dlq = Counter(
            "scrapifie_dlq_total",
            "Records sent to the DLQ.",
            ["topic", "reason"],
            registry=registry,
        )
        self.robots_refused = Counter(
            "scrapifie_robots_refused_total",
            "Jobs not fetched because robots.txt disallows them.",
            ["tier"],
            registry=registry,
        )
        self.egress = Counter(
            "scrapifie_egress_requests_total",
            "Fetches through egress proxies (proxy named without credentials).",
            ["pool", "proxy", "result"],
            registry=registry,
        )
        self.deferred = Counter(
            "scrapifie_deferred_total",
            "Jobs parked in a delay topic.",
            ["tier", "reason", "delay_s"],
            registry=registry,
        )
        self.released = Counter(
            "scrapifie_delay_released_total",
            "Jobs moved from a delay topic back to their tier topic.",
            ["tier", "delay_s"],
            registry=registry,
        )
        self.escalations = Counter(
            "scrapifie_escalations_total",
            "Jobs handed to a higher tier, by marker.",
            ["from_tier", "to_tier", "marker"],
            registry=registry,
        )
        self.results = Counter(
            "scrapifie_results_total",
            "Final results emitted.",
            ["tier", "status"],
            registry=registry,
        )


class BrowserPoolCollector(Collector):
    """A browser tier's pool counters (``streams.browser.pool.PoolStats``), read at scrape
    time: contexts opened, jobs served by a context kept for the tenant, Chromium launches,
    recycled and crashed browsers."""

    def __init__(self, tier: str, stats: Any) -> None:
        self._tier = tier
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s, tier = self._stats, self._tier
        contexts = CounterMetricFamily(
            "scrapifie_browser_contexts",
            "Browser contexts opened, and jobs that ran in a context kept from an earlier job "
            "of the same tenant (kind=reused).",
            labels=["tier", "kind"],
        )
        contexts.add_metric([tier, "opened"], s.contexts)
        contexts.add_metric([tier, "reused"], s.reused)
        yield contexts
        browsers = CounterMetricFamily(
            "scrapifie_browser_processes",
            "Chromium processes launched (ephemeral, persistent profile), recycled, crashed.",
            labels=["tier", "event"],
        )
        browsers.add_metric([tier, "launched"], s.launches)
        browsers.add_metric([tier, "launched_persistent"], s.persistent_launches)
        browsers.add_metric([tier, "retired"], s.retired)
        browsers.add_metric([tier, "crashed"], s.crashed)
        yield browsers
