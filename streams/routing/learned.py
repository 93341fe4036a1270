"""Learned routing for ``tier: auto``: start each site on the cheapest tier that has been
working for it, learned from what the tiers report, with decay and periodic re-probing of the
cheaper tier so the choice can come back down.

State per site (a registrable domain) is a small JSON-able dict kept in a Faust table:
``{"tiers": {tier: [blocked_score, observations, updated_at]}, "routed": n}``. The blocked score
is an exponentially weighted share of recent outcomes that were blocked; it also decays toward
zero with time (half-life), so an old block is eventually forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas import TIER_ORDER

TIERS = [t.value for t in TIER_ORDER]


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    alpha: float = 0.3  # weight of the newest observation
    blocked_threshold: float = 0.5  # above this share of blocks, skip the tier
    min_observations: int = 3  # before a tier can be skipped
    half_life_s: float = 6 * 3600.0
    probe_every: int = 20  # every Nth job of a site re-tries the tier below its choice


def _score(entry: list[float], now: float, policy: RoutingPolicy) -> float:
    blocked, _seen, updated = entry
    return float(blocked * 0.5 ** (max(0.0, now - updated) / policy.half_life_s))


def observe(
    state: dict[str, Any] | None, tier: str, blocked: bool, now: float, policy: RoutingPolicy
) -> dict[str, Any]:
    """New state after ``tier`` reported a success (blocked=False) or a block for the site."""
    state = {
        "tiers": dict((state or {}).get("tiers", {})),
        "routed": (state or {}).get("routed", 0),
    }
    old = state["tiers"].get(tier)
    score = _score(old, now, policy) if old else 0.0
    seen = old[1] if old else 0
    new = (1 - policy.alpha) * score + policy.alpha * (1.0 if blocked else 0.0)
    state["tiers"][tier] = [new, seen + 1, now]
    return state


def choose(
    state: dict[str, Any] | None, max_tier: str, now: float, policy: RoutingPolicy
) -> tuple[str, str, dict[str, Any]]:
    """(tier, reason, new state) for the next auto job of the site."""
    tiers = (state or {}).get("tiers", {})
    routed = (state or {}).get("routed", 0) + 1
    new_state = {"tiers": tiers, "routed": routed}
    allowed = TIERS[: TIERS.index(max_tier) + 1]
    chosen, why = allowed[0], "no history: cheapest tier"
    for tier in allowed:
        entry = tiers.get(tier)
        if entry and entry[1] >= policy.min_observations:
            score = _score(entry, now, policy)
            if score > policy.blocked_threshold and tier != allowed[-1]:
                chosen, why = (
                    allowed[allowed.index(tier) + 1],
                    (f"learned: {tier} blocked in {score:.0%} of recent jobs"),
                )
                continue
        chosen = tier
        if tier != allowed[0]:
            break
        why = "cheapest tier is working" if entry else why
        break
    idx = allowed.index(chosen)
    if idx > 0 and routed % policy.probe_every == 0:
        return (
            allowed[idx - 1],
            f"probe: re-checking {allowed[idx - 1]} (usually {chosen})",
            new_state,
        )
    return chosen, why, new_state
