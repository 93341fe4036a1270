"""Pure decisions about one attempt: what happened, and what the pipeline does next.

No I/O here: everything is a function of the response or error, unit-tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import ErrorCode
from schemas.records import AttemptOutcome
from streams.errors import BlockedError, FetchError, TransientError
from streams.fetchers.base import FetchResponse
from streams.tier.blocking import inspect

# How an attempt ended: the enum travels on scrape.metering, so it is defined in schemas.
Kind = AttemptOutcome


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    code: ErrorCode | None = None
    reason: str | None = None
    http_status: int | None = None
    retry_after_s: float | None = None
    marker: str | None = None  # what made a page count as blocked (evidence for escalations)
    egress_pool: str | None = None  # the egress pool the attempt went through (None: direct)

    @property
    def ok(self) -> bool:
        return self.kind is Kind.OK


# Statuses where trying the same tier again later may work.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})


def classify_response(resp: FetchResponse, tier: str = "http") -> Outcome:
    status = resp.status
    retry_after = parse_retry_after(resp.headers.get("retry-after"))
    verdict = inspect(
        tier=tier,
        status=status,
        url=resp.url,
        final_url=resp.final_url,
        body=resp.body,
        content_type=resp.content_type,
    )
    if verdict.blocked:
        reason = f"{verdict.kind.replace('_', ' ')} ({verdict.marker}) with HTTP {status}"
        return Outcome(Kind.BLOCKED, ErrorCode.BLOCKED, reason, status, retry_after, verdict.marker)
    if status == 403:
        return Outcome(Kind.BLOCKED, ErrorCode.BLOCKED, "HTTP 403", status, retry_after, "http_403")
    if 200 <= status < 400:
        return Outcome(Kind.OK, http_status=status)
    if status in TRANSIENT_STATUSES:
        return Outcome(
            Kind.TRANSIENT,
            ErrorCode.HTTP_ERROR,
            f"HTTP {status}",
            status,
            retry_after,
        )
    return Outcome(Kind.FATAL, ErrorCode.HTTP_ERROR, f"HTTP {status}", status)


def classify_error(exc: FetchError) -> Outcome:
    kind = (
        Kind.BLOCKED
        if isinstance(exc, BlockedError)
        else Kind.TRANSIENT
        if isinstance(exc, TransientError)
        else Kind.FATAL
    )
    return Outcome(kind, exc.code, exc.message, retry_after_s=exc.retry_after_s)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; HTTP dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if 0 <= seconds < 1e9 else None
