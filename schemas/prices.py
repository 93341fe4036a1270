"""What things cost, in credits: one definition read by the gateway (reserving a job's credits
before it is queued) and the workers (metering what ran).

A job is charged once, when it ends: the price of the tier whose attempt succeeded, the cache's
price for a job answered from the result cache, the robots price for a job robots.txt refused;
a failed job costs ``failed`` (0 by default). Attempts that fail on the way cost nothing.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from schemas.topics import TIER_ORDER

__all__ = ["DEFAULT_PRICES", "Prices"]


class Prices(BaseModel):
    model_config = ConfigDict(frozen=True)

    tiers: dict[str, int] = Field(
        default_factory=lambda: {"http": 1, "browser": 5, "stealth": 10},
        description="Credits of a page fetched by each tier.",
    )
    cache_hit: int = Field(0, ge=0, description="Credits of a job answered from the cache.")
    robots_refusal: int = Field(0, ge=0, description="Credits of a job robots.txt refused.")
    failed: int = Field(0, ge=0, description="Credits of any other failed job.")

    def tier(self, tier: str) -> int:
        return self.tiers.get(tier, 0)

    def most(self, start: str, max_tier: str) -> int:
        """The most a job starting on ``start`` that may escalate up to ``max_tier`` can cost."""
        order = [t.value for t in TIER_ORDER]
        if start not in order:  # auto: the router may start it on any tier up to max_tier
            start = order[0]
        hi = order.index(max_tier) if max_tier in order else len(order) - 1
        lo = order.index(start)
        return max(self.tier(t) for t in order[lo : max(hi, lo) + 1])


DEFAULT_PRICES: Final = Prices()
