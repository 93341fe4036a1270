"""streams.tier.outcome: pure classification of a response or a fetch error."""

from __future__ import annotations

import pytest

from schemas import ErrorCode
from streams.errors import BlockedError, FatalError, FetchError, TransientError
from streams.fetchers.base import FetchResponse
from streams.fetchers.decompress import TooLarge
from streams.tier.outcome import Kind, Outcome, classify_error, classify_response, parse_retry_after

pytestmark = pytest.mark.unit


def response(status: int, **headers: str) -> FetchResponse:
    return FetchResponse(
        url="http://example.com/",
        final_url="http://example.com/",
        status=status,
        headers={k.replace("_", "-").lower(): v for k, v in headers.items()},
        body=b"",
        content_type=None,
        wire_bytes=0,
    )


@pytest.mark.parametrize("status", [200, 204, 299])
def test_success(status: int) -> None:
    outcome = classify_response(response(status))
    assert outcome == Outcome(Kind.OK, http_status=status)
    assert outcome.ok


@pytest.mark.parametrize("status", [301, 302, 304, 308])
def test_3xx_not_followed_is_a_response_not_an_error(status: int) -> None:
    # a redirect without Location reaches classification as it is
    outcome = classify_response(response(status))
    assert outcome.kind is Kind.OK
    assert outcome.code is None
    assert outcome.http_status == status


@pytest.mark.parametrize("status", [400, 404, 410, 451, 501])
def test_client_errors_and_non_transient_5xx_are_fatal(status: int) -> None:
    outcome = classify_response(response(status, retry_after="5"))
    assert outcome.kind is Kind.FATAL
    assert not outcome.ok
    assert outcome.code is ErrorCode.HTTP_ERROR
    assert outcome.reason == f"HTTP {status}"
    assert outcome.http_status == status
    assert outcome.retry_after_s is None


def test_429_with_retry_after_seconds() -> None:
    outcome = classify_response(response(429, retry_after="7"))
    assert outcome == Outcome(Kind.TRANSIENT, ErrorCode.HTTP_ERROR, "HTTP 429", 429, 7.0)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 520, 524])
def test_transient_statuses(status: int) -> None:
    outcome = classify_response(response(status))
    assert outcome.kind is Kind.TRANSIENT
    assert outcome.code is ErrorCode.HTTP_ERROR
    assert outcome.http_status == status
    assert outcome.retry_after_s is None


def test_503_with_retry_after() -> None:
    assert classify_response(response(503, retry_after=" 120 ")).retry_after_s == 120.0


@pytest.mark.parametrize(
    "value",
    ["", "soon", "Wed, 21 Oct 2015 07:28:00 GMT", "-5", "nan", "7 seconds", "0x10"],
)
def test_bad_retry_after_is_ignored(value: str) -> None:
    outcome = classify_response(response(429, retry_after=value))
    assert outcome.kind is Kind.TRANSIENT
    assert outcome.retry_after_s is None


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("0", 0.0), ("7", 7.0), ("1.5", 1.5), ("-0.1", None)]
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TransientError(ErrorCode.TIMEOUT, "slow", retry_after_s=3.0), Kind.TRANSIENT),
        (BlockedError(ErrorCode.BLOCKED, "challenge page"), Kind.BLOCKED),
        (FatalError(ErrorCode.INVALID_URL, "bad url"), Kind.FATAL),
        (TooLarge(100), Kind.FATAL),
        (FetchError(ErrorCode.INTERNAL, "unknown"), Kind.FATAL),
    ],
)
def test_classify_error(exc: FetchError, kind: Kind) -> None:
    outcome = classify_error(exc)
    assert outcome.kind is kind
    assert outcome.code is exc.code
    assert outcome.reason == exc.message
    assert outcome.retry_after_s == exc.retry_after_s
    assert outcome.http_status is None
    assert not outcome.ok


def test_classify_error_keeps_retry_after() -> None:
    outcome = classify_error(TransientError(ErrorCode.CONNECTION_ERROR, "reset", retry_after_s=9))
    assert outcome == Outcome(Kind.TRANSIENT, ErrorCode.CONNECTION_ERROR, "reset", None, 9)


def test_blocked_and_transient_are_retriable_fatal_is_not() -> None:
    assert TransientError(ErrorCode.TIMEOUT, "").retriable
    assert BlockedError(ErrorCode.BLOCKED, "").retriable
    assert not FatalError(ErrorCode.HTTP_ERROR, "").retriable


@pytest.mark.parametrize(("status", "marker"), [(401, "http_401"), (403, "http_403")])
def test_401_and_403_are_blocked_not_fatal(status: int, marker: str) -> None:
    outcome = classify_response(response(status))
    assert (outcome.kind, outcome.code, outcome.marker) == (Kind.BLOCKED, ErrorCode.BLOCKED, marker)
