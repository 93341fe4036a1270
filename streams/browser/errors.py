"""The browser tiers' errors: the pool's own, and Playwright's mapped to ours at this boundary
(by type first, then by Chromium's ``net::ERR_*`` name)."""

from __future__ import annotations

import re

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from schemas import ErrorCode
from streams.errors import FatalError, FetchError, TransientError

__all__ = [
    "BrowserCrashed",
    "BrowserUnavailable",
    "map_net_error",
    "map_playwright_error",
    "net_token",
]


class BrowserCrashed(TransientError):
    """The Chromium process serving this job went away (crash, kill, OOM). Retry the job."""

    def __init__(self, message: str = "the browser process ended during the job") -> None:
        super().__init__(ErrorCode.CONNECTION_ERROR, message)


class BrowserUnavailable(TransientError):
    """Chromium could not be started (or the pool is closed)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INTERNAL, message)


_NET_ERROR = re.compile(r"\bnet::(ERR_[A-Z0-9_]+)\b")

_FATAL_NET: dict[str, ErrorCode] = {
    "ERR_NAME_NOT_RESOLVED": ErrorCode.DNS_ERROR,
    "ERR_TOO_MANY_REDIRECTS": ErrorCode.TOO_MANY_REDIRECTS,
    "ERR_INVALID_URL": ErrorCode.INVALID_URL,
    "ERR_UNKNOWN_URL_SCHEME": ErrorCode.INVALID_URL,
    "ERR_DISALLOWED_URL_SCHEME": ErrorCode.INVALID_URL,
    "ERR_UNSAFE_PORT": ErrorCode.INVALID_URL,
    "ERR_UNSAFE_REDIRECT": ErrorCode.INVALID_URL,
    "ERR_INVALID_REDIRECT": ErrorCode.INVALID_URL,
    "ERR_CONTENT_DECODING_FAILED": ErrorCode.DECODE_ERROR,
    "ERR_CONTENT_LENGTH_MISMATCH": ErrorCode.DECODE_ERROR,
    "ERR_INVALID_CHUNKED_ENCODING": ErrorCode.DECODE_ERROR,
    "ERR_RESPONSE_HEADERS_TOO_BIG": ErrorCode.HTTP_ERROR,
    "ERR_INVALID_HTTP_RESPONSE": ErrorCode.HTTP_ERROR,
    "ERR_FILE_TOO_BIG": ErrorCode.TOO_LARGE,
}
_TRANSIENT_NET: dict[str, ErrorCode] = {
    "ERR_NAME_RESOLUTION_FAILED": ErrorCode.DNS_ERROR,
    "ERR_DNS_TIMED_OUT": ErrorCode.DNS_ERROR,
    "ERR_TIMED_OUT": ErrorCode.TIMEOUT,
    "ERR_CONNECTION_TIMED_OUT": ErrorCode.TIMEOUT,
}


def map_net_error(token: str, detail: str) -> FetchError:
    """Our error for one Chromium ``net::ERR_*`` code (Chromium's ``net_error_list.h``).

    Why a token out of the message: Playwright's ``Error`` carries only a name, a message and a
    stack, no code. The ``net::ERR_*`` identifiers are Chromium's stable error names, not prose;
    nothing else in the message is interpreted.
    """
    if token in _FATAL_NET:
        return FatalError(_FATAL_NET[token], f"{token}: {detail}")
    if token in _TRANSIENT_NET:
        return TransientError(_TRANSIENT_NET[token], f"{token}: {detail}")
    if token.startswith(("ERR_CERT_", "ERR_SSL_")) or token in (
        "ERR_BAD_SSL_CLIENT_AUTH_CERT",
        "ERR_SSL_PROTOCOL_ERROR",
    ):
        return FatalError(ErrorCode.TLS_ERROR, f"{token}: {detail}")
    # Refused, reset, closed, aborted, unreachable, empty response...: try again later.
    return TransientError(ErrorCode.CONNECTION_ERROR, f"{token}: {detail}")


def map_playwright_error(exc: PlaywrightError, url: str) -> FetchError:
    """Our error for a Playwright error, by type first (timeouts), then by net:: token."""
    if isinstance(exc, PlaywrightTimeoutError):
        return TransientError(ErrorCode.TIMEOUT, f"browser timed out: {_first_line(exc)}")
    token = net_token(exc)
    if token is not None:
        return map_net_error(token, url)
    return TransientError(ErrorCode.INTERNAL, f"browser error: {_first_line(exc)}")


def net_token(exc: PlaywrightError) -> str | None:
    match = _NET_ERROR.search(exc.message)
    return match.group(1) if match else None


def _first_line(exc: PlaywrightError) -> str:
    return exc.message.split("\n", 1)[0]
