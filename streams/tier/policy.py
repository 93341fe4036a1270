"""What happens after an attempt: finish the job, retry the same tier later, or escalate.

Pure functions of the outcome and the job's counters (Scrapy's get_retry_request is the model);
the processor does the I/O around them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from schemas import TIER_ORDER, ErrorCode, Tier
from streams.tier.outcome import Kind, Outcome


class Action(StrEnum):
    FINISH = "finish"
    RETRY = "retry"
    ESCALATE = "escalate"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay_s: float = 0.0
    next_tier: str | None = None
    # On FINISH after exhausted retries or escalations: the final error code.
    code: ErrorCode | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3  # per tier, including the first
    base_delay_s: float = 2.0
    max_delay_s: float = 300.0
    jitter: float = 0.5  # ±50 %

    def backoff_s(
        self, tier_attempt: int, retry_after_s: float | None, rng: random.Random
    ) -> float:
        delay: float = min(self.max_delay_s, self.base_delay_s * 2.0 ** (tier_attempt - 1))
        delay *= 1 + self.jitter * (2 * rng.random() - 1)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_delay_s))
        return delay


def next_tier(tier: str, max_tier: str) -> str | None:
    order = [t.value for t in TIER_ORDER]
    i, limit = order.index(tier), order.index(Tier(max_tier).value)
    return order[i + 1] if i < limit else None


def decide(
    outcome: Outcome,
    *,
    tier: str,
    tier_attempt: int,
    max_tier: str,
    policy: RetryPolicy,
    rng: random.Random,
) -> Decision:
    if outcome.kind is Kind.OK:
        return Decision(Action.FINISH)
    if outcome.kind is Kind.FATAL:
        return Decision(Action.FINISH, code=outcome.code)
    if outcome.kind is Kind.TRANSIENT:
        if tier_attempt < policy.max_attempts:
            return Decision(
                Action.RETRY, policy.backoff_s(tier_attempt, outcome.retry_after_s, rng)
            )
        return Decision(Action.FINISH, code=outcome.code)
    upper = next_tier(tier, max_tier)
    if upper is None:
        return Decision(Action.FINISH, code=ErrorCode.BLOCKED)
    return Decision(Action.ESCALATE, next_tier=upper)
