"""bench.run: the vs-Scrapy goal compares equal fetches in flight, decided on the most workers."""

from __future__ import annotations

from typing import Any

import pytest

from bench.report import _busy_warning, _formats_section
from bench.run import goals, scrapy_ratios

pytestmark = pytest.mark.unit


def e2e(workers: int, in_flight: int, rows: float) -> dict[str, Any]:
    return {"workers": workers, "max_in_flight": in_flight, "row_pages_per_s": rows}


SCRAPY = {64: 600.0, 128: 500.0}


def test_each_round_is_compared_with_scrapy_at_its_total_in_flight() -> None:
    rounds = [e2e(2, 64, 1000.0), e2e(1, 64, 900.0), e2e(1, 200, 950.0)]
    assert scrapy_ratios(rounds, SCRAPY) == [
        (1, 64, 900.0, 600.0, 1.5),
        (2, 128, 1000.0, 500.0, 2.0),
    ]  # 200 in flight: Scrapy was not measured there


def test_the_goal_is_decided_on_the_round_with_most_workers() -> None:
    results = {
        "e2e": {"throughput": [e2e(1, 64, 600.0), e2e(2, 64, 740.0)]},
        "scrapy": [{"concurrency": c, "pages_per_s": v} for c, v in SCRAPY.items()],
    }
    (goal,) = [g for g in goals(results) if "Scrapy" in g["goal"]]
    assert goal["met"] is False  # 740 / 500 = 1.48x, though one worker alone is 1.0x
    assert goal["measured"].startswith("1.48x (2 workers at 64 vs Scrapy at 128")
    assert "1 worker at 64 vs Scrapy at 64: 1.00x" in goal["measured"]


def test_without_scrapy_at_a_matching_concurrency_it_is_not_measured() -> None:
    results = {"e2e": {"throughput": [e2e(2, 64, 740.0)]}, "scrapy": []}
    (goal,) = [g for g in goals(results) if "Scrapy" in g["goal"]]
    assert goal["met"] is None


def test_the_memory_goal_is_read_on_the_round_that_really_held_200_fetches() -> None:
    fast = {**e2e(1, 200, 950.0), "worker_peak_rss_bytes": 110e6, "in_flight_seen": {"max": 60}}
    slow = {
        **e2e(1, 200, 150.0),
        "worker_peak_rss_bytes": 130e6,
        "in_flight_seen": {"max": 200},
        "slow_rate_kib": 32,
    }
    (goal,) = [g for g in goals({"e2e": {"throughput": [fast]}}) if "RSS" in g["goal"]]
    assert goal["measured"] == "110 MB (max in flight seen: 60)"
    results = {"e2e": {"throughput": [fast], "memory_round": slow}}
    (goal,) = [g for g in goals(results) if "RSS" in g["goal"]]
    assert goal["met"] is True
    assert goal["measured"] == ("130 MB (max in flight seen: 200; responses sent at 32 KiB/s each)")


def test_the_formats_goal_compares_the_medians_of_alternating_rounds() -> None:
    cpu = [{"worker": w} for w in (0.8, 0.9, 0.7)]
    trials = {
        "runs": 3,
        "plain_row_pages_per_s": [1000.0, 700.0, 1100.0],  # one slow round: the median holds
        "formats_row_pages_per_s": [720.0, 760.0, 650.0],
        "plain_cpu_ms_per_page": cpu,
        "formats_cpu_ms_per_page": [{"worker": w + 0.5} for w in (0.8, 0.9, 0.7)],
    }
    fr = {**e2e(2, 64, 720.0), "formats": ["markdown", "links"]}
    results = {"e2e": {"throughput": [], "formats_round": fr, "formats_trials": trials}}
    (goal,) = [g for g in goals(results) if "formats" in g["goal"]]
    assert goal["met"] is True  # 720 / 1000
    assert goal["measured"].startswith("0.72x, medians of 3 rounds each (720 vs 1,000 pages/s;")
    assert "+0.50 ms CPU per page" in goal["measured"]


def test_the_report_shows_host_probes_and_says_when_the_host_speed_varied() -> None:
    trials = {
        "runs": 1,
        "plain_row_pages_per_s": [1000.0],
        "formats_row_pages_per_s": [700.0],
        "plain_cpu_ms_per_page": [{"worker": 0.8, "machine": 1.6}],
        "formats_cpu_ms_per_page": [{"worker": 1.3, "machine": 2.3}],
        "plain_host_probe_ms": [[8.0, 8.2]],
        "formats_host_probe_ms": [[8.1, 11.0]],
    }
    fr = {**e2e(2, 64, 700.0), "formats": ["markdown"]}
    results = {
        "machine": {},
        "e2e": {"throughput": [], "formats_round": fr, "formats_trials": trials},
    }
    table = "\n".join(_formats_section(results))
    assert "| with formats 1 | 700 | 1.30 | — | — | 2.30 | 8.1 / 11.0 |" in table
    assert "a fixed Python loop took 8.0 to 11.0 ms" in "\n".join(_busy_warning(results))
    steady = {**trials, "formats_host_probe_ms": [[8.1, 8.3]]}
    results["e2e"]["formats_trials"] = steady
    assert "the host's speed varied" not in "\n".join(_busy_warning(results))
