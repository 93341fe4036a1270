"""Error codes that travel on our topics and reach users, and the decode error."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Machine-readable reason a job failed (``ScrapeResult.error_code``)."""

    TIMEOUT = "timeout"
    BLOCKED = "blocked"
    ROBOTS_DISALLOWED = "robots_disallowed"
    SSRF_BLOCKED = "ssrf_blocked"
    TOO_LARGE = "too_large"
    INVALID_URL = "invalid_url"
    DNS_ERROR = "dns_error"
    TLS_ERROR = "tls_error"
    CONNECTION_ERROR = "connection_error"
    HTTP_ERROR = "http_error"
    INVALID_RESPONSE = "invalid_response"
    PROXY_ERROR = "proxy_error"
    INVALID_REQUEST = "invalid_request"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    DECODE_ERROR = "decode_error"
    BUDGET_EXCEEDED = "budget_exceeded"  # the next tier would cost more than max_credits
    INSUFFICIENT_CREDITS = "insufficient_credits"  # more than the credits reserved for the job
    UNKNOWN_TENANT = "unknown_tenant"  # a record (published to Kafka) names no tenant we have
    TENANT_DISABLED = "tenant_disabled"
    INTERNAL = "internal"


class DecodeError(Exception):
    """A value on a topic that is not one of our records. ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
