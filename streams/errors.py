"""Errors of the fetch path. Library exceptions are mapped to these at the adapter boundary.

Each error carries the user-facing :class:`~schemas.ErrorCode` and the policy class the
pipeline acts on: ``Transient`` (retry later, same tier), ``Blocked`` (escalate to the next
tier), ``Fatal`` (fail the job).
"""

from __future__ import annotations

from schemas import ErrorCode


class FetchError(Exception):
    """Root of our fetch errors. ``retriable`` says whether trying again may succeed."""

    retriable = False
    egress_pool: str | None = None  # set by EgressFetcher: the pool the attempt went through

    def __init__(
        self, code: ErrorCode, message: str, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class TransientError(FetchError):
    """Timeouts, resets, 5xx: the same tier may succeed later."""

    retriable = True


class BlockedError(FetchError):
    """The site refused this tier (bot wall, challenge); a higher tier may succeed."""

    retriable = True


class FatalError(FetchError):
    """Invalid URL, too large, 404...: trying again will not help."""
