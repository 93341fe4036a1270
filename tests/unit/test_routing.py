"""Learned routing decisions (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from streams.routing.learned import RoutingPolicy, choose, observe

pytestmark = pytest.mark.unit
P = RoutingPolicy(
    alpha=0.3, blocked_threshold=0.5, min_observations=3, half_life_s=3600, probe_every=5
)


def test_no_history_starts_cheapest() -> None:
    tier, reason, state = choose(None, "stealth", 0, P)
    assert tier == "http" and "no history" in reason and state["routed"] == 1


def test_a_js_only_site_moves_to_browser_after_a_few_blocks_and_is_probed_back() -> None:
    state: dict[str, Any] | None = None
    for _ in range(4):
        state = observe(state, "http", True, 0, P)
        state = observe(state, "browser", False, 0, P)
    tiers = []
    for i in range(10):
        tier, reason, state = choose(state, "stealth", i, P)
        tiers.append(tier)
        if tier == "browser":
            assert reason.startswith("learned: http blocked")
    assert tiers.count("browser") == 8 and tiers.count("http") == 2  # every 5th is a probe
    assert tiers[4] == "http" and tiers[9] == "http"


def test_blocks_are_forgotten_with_time_and_successes_bring_it_down() -> None:
    state: dict[str, Any] | None = None
    for _ in range(5):
        state = observe(state, "http", True, 0, P)
    assert choose(state, "stealth", 1, P)[0] == "browser"
    assert choose(state, "stealth", 4 * 3600, P)[0] == "http"  # 4 half-lives later
    for _ in range(4):
        state = observe(state, "http", False, 10, P)
    assert choose(state, "stealth", 11, P)[0] == "http"


def test_max_tier_caps_the_choice() -> None:
    state: dict[str, Any] | None = None
    for _ in range(5):
        state = observe(state, "http", True, 0, P)
        state = observe(state, "browser", True, 0, P)
    assert choose(state, "stealth", 1, P)[0] == "stealth"
    assert choose(state, "browser", 1, P)[0] == "browser"
    assert choose(state, "http", 1, P)[0] == "http"


def test_feedback_is_learned_at_the_time_it_was_observed() -> None:
    """Replayed feedback (the router's warm-up) decays from when the tier saw it, not from
    when the router reads it."""
    from datetime import UTC, datetime, timedelta

    from schemas.records import RouteFeedback
    from streams.routing.router import learn

    policy = RoutingPolicy()
    now = datetime.now(UTC)
    fresh: dict[str, Any] = {}
    old: dict[str, Any] = {}
    for _ in range(5):
        learn(
            fresh, RouteFeedback(site="a.test", tier="http", blocked=True, created_at=now), policy
        )
        learn(
            old,
            RouteFeedback(
                site="a.test", tier="http", blocked=True, created_at=now - timedelta(days=2)
            ),
            policy,
        )
    t = now.timestamp()
    assert choose(fresh["a.test"], "browser", t, policy)[0] == "browser"
    assert choose(old["a.test"], "browser", t, policy)[0] == "http"  # forgotten by now
