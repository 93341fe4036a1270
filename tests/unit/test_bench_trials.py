"""The browser comparison's interleaved runs and how the goal reads them (bench/, no services)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.browser.tier import _trials, median_rate
from bench.run import _browser_headline


class _Progress:
    def __init__(self) -> None:
        self.phases: list[str] = []

    def phase(self, name: str) -> None:
        self.phases.append(name)

    def info(self, text: str) -> None:
        pass


def _attempt(what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except RuntimeError as exc:
        return {"error": str(exc)}


def test_runs_alternate_and_the_ratio_is_of_medians() -> None:
    calls: list[tuple[str, int]] = []
    rates = {"raw_new_context": {2: 12.0, 3: 10.0}, "tier": {2: 9.0, 3: 11.0}}

    def system(key: str) -> Callable[[int], dict[str, Any]]:
        def run(i: int) -> dict[str, Any]:
            calls.append((key, i))
            return {"pages_per_s": rates[key][i]}

        return run

    row = {
        "concurrency": 4,
        "raw_new_context": {"pages_per_s": 11.0},
        "tier": {"pages_per_s": 10.0},
    }
    out = _trials(
        row, 3, {k: system(k) for k in ("raw_new_context", "tier")}, _attempt, _Progress()
    )
    # Run 2 starts with the tier, run 3 with the raw loop: neither always goes first.
    assert calls == [("tier", 2), ("raw_new_context", 2), ("raw_new_context", 3), ("tier", 3)]
    assert out["pages_per_s"] == {"raw_new_context": [11.0, 12.0, 10.0], "tier": [10.0, 9.0, 11.0]}
    assert out["median_pages_per_s"] == {"raw_new_context": 11.0, "tier": 10.0}
    assert out["ratio_tier_to_raw_new"] == round(10.0 / 11.0, 3)


def test_a_failed_run_is_left_out_of_the_median() -> None:
    assert median_rate([10.0, None, 12.0]) == 11.0
    assert median_rate([None]) is None


def test_the_goal_reads_the_medians_when_there_were_several_runs() -> None:
    head = {
        "concurrency": 4,
        "raw_new_context": {"pages_per_s": 11.4},
        "tier": {"pages_per_s": 10.4},
        "ratio_tier_to_raw_new": 0.912,
        "ratio_tier_to_raw_reused": 1.01,
        "trials": {
            "runs": 3,
            "pages_per_s": {"raw_new_context": [11.4, 10.1, 10.8], "tier": [10.4, 10.3, 10.9]},
            "median_pages_per_s": {"raw_new_context": 10.8, "tier": 10.4},
            "ratio_tier_to_raw_new": 0.963,
        },
    }
    ratio, detail = _browser_headline(head) or (0.0, "")
    assert ratio == 0.963
    assert detail.startswith("0.96x, medians of 3 interleaved runs (10.4 vs 10.8 pages/s")
    assert "tier 10.4 / 10.3 / 10.9" in detail
    del head["trials"]
    assert _browser_headline(head) == (
        0.912,
        "0.91x (10.4 vs 11.4 pages/s; vs reused contexts 1.01x)",
    )


def test_no_ratio_no_headline() -> None:
    assert _browser_headline({"concurrency": 4, "tier": {"error": "x"}}) is None
