"""A job's fetch options: their allowed values, the deployment's caps, and the one validator.

Both edges use :func:`parse_options`: the gateway on the JSON a person sends (an
:class:`InvalidOptions` becomes a 400 with its message), and every tier worker on each request
it consumes, because producers may publish straight to Kafka (the job then ends ``failed`` with
``invalid_request`` and the same message). So whatever reaches a fetcher, a browser, a log line
or a PostgreSQL text column has passed these checks: sizes within the deployment's caps, header
names that are RFC 9110 tokens, no framing or hop-by-hop headers (a job must never change how
a shared keep-alive connection is delimited: that is request smuggling into the next tenant's
request), and no control characters in any string.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final, get_args

from pydantic import BaseModel, ConfigDict, Field

from schemas.cache import MAX_AGE_S
from schemas.extract import InvalidExtract, parse_extract_rules, rules_to_json
from schemas.formats import DEFAULT_FORMATS, Format
from schemas.records import FetchOptions, ResourceType, ScreenshotMode, WaitUntil
from schemas.text import UNPRINTABLE

__all__ = [
    "FORBIDDEN_HEADERS",
    "RESOURCE_TYPES",
    "SCREENSHOT_MODES",
    "WAIT_UNTIL",
    "InvalidOptions",
    "JobLimits",
    "ResourceType",
    "ScreenshotMode",
    "WaitUntil",
    "check_text",
    "parse_options",
]

WAIT_UNTIL: Final[tuple[str, ...]] = get_args(WaitUntil)
SCREENSHOT_MODES: Final[tuple[str, ...]] = get_args(ScreenshotMode)
RESOURCE_TYPES: Final[tuple[str, ...]] = get_args(ResourceType)

OPTION_NAMES: Final = (
    "timeout_s",
    "max_body_bytes",
    "headers",
    "wait_until",
    "wait_for",
    "screenshot",
    "block_resources",
    "session_id",
    "egress_pool",
    "formats",
    "only_main_content",
    "extract",
    "max_age_s",
    "max_credits",
)

# Headers that frame the message or belong to one connection hop (RFC 9110 §7.6.1, RFC 9112
# §6-7), plus Host (the fetcher writes it from the URL) and Expect (it changes how the body is
# sent). Refused by name, case-insensitively.
FORBIDDEN_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "http2-settings",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
MAX_HEADERS: Final = 50
MAX_HEADER_NAME: Final = 256
MAX_HEADER_VALUE: Final = 8192
MAX_SHORT_STRING: Final = 200

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# C0 controls (HTAB allowed in header values only), DEL, and lone surrogates (not encodable).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


class InvalidOptions(ValueError):
    """A job's options break a rule; ``str(exc)`` says which and what to send instead."""


class JobLimits(BaseModel):
    """Caps on what one job may ask for: the deployment's protection against one tenant."""

    model_config = ConfigDict(frozen=True)

    max_body_bytes: int = Field(
        10 * 1024 * 1024,
        gt=0,
        description=(
            "Largest options.max_body_bytes a job may ask for. Keep it well below the result"
            " topic's max.message.bytes (16 MiB): a result that would not fit fails too_large."
        ),
    )
    max_timeout_s: float = Field(300.0, gt=0, description="Largest options.timeout_s.")


DEFAULT_LIMITS: Final = JobLimits()


def check_text(value: str, what: str, max_len: int = MAX_SHORT_STRING) -> str:
    """``value`` if it is 1..``max_len`` characters with no control characters, else raise."""
    if not 0 < len(value) <= max_len:
        raise InvalidOptions(f"{what} must be a string of 1-{max_len} characters")
    if UNPRINTABLE.search(value):
        raise InvalidOptions(f"{what} must not contain control characters")
    return value


def parse_options(raw: Any, limits: JobLimits = DEFAULT_LIMITS) -> FetchOptions:
    """The normalised :class:`FetchOptions` for ``raw``.

    ``raw`` is what a person sent (a JSON object; absent fields may be missing) or a decoded
    record's options; both give the same result, so validating twice is harmless. Raises
    :class:`InvalidOptions` naming the option and what it accepts.
    """
    if isinstance(raw, FetchOptions):
        raw = {name: getattr(raw, name) for name in OPTION_NAMES}
    if not isinstance(raw, Mapping):
        raise InvalidOptions("options must be an object")
    unknown = set(raw) - set(OPTION_NAMES)
    if unknown:
        raise InvalidOptions(
            f"unknown options: {', '.join(sorted(map(str, unknown)))}"
            f" (valid: {', '.join(OPTION_NAMES)})"
        )
    screenshot = _choice(raw.get("screenshot"), "screenshot", SCREENSHOT_MODES)
    extract = _extract(raw.get("extract"))
    formats = _formats(raw.get("formats"), extract is not None, screenshot is not None)
    if Format.SCREENSHOT in formats and screenshot is None:
        screenshot = "viewport"
    return FetchOptions(
        timeout_s=_timeout(raw.get("timeout_s"), limits),
        max_body_bytes=_max_body(raw.get("max_body_bytes"), limits),
        headers=_headers(raw.get("headers")),
        wait_until=_choice(raw.get("wait_until"), "wait_until", WAIT_UNTIL),
        wait_for=_short(raw.get("wait_for"), "wait_for"),
        screenshot=screenshot,
        block_resources=_resources(raw.get("block_resources")),
        session_id=_short(raw.get("session_id"), "session_id"),
        egress_pool=_short(raw.get("egress_pool"), "egress_pool"),
        formats=formats,
        only_main_content=_flag(raw.get("only_main_content"), "only_main_content", True),
        extract=extract,
        max_age_s=_max_age(raw.get("max_age_s")),
        max_credits=_max_credits(raw.get("max_credits")),
    )


def _max_credits(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31 - 1:
        raise InvalidOptions("options.max_credits must be a non-negative integer")
    return value


def _max_age(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AGE_S:
        raise InvalidOptions(f"options.max_age_s must be an integer in [0, {MAX_AGE_S}]")
    return value or None


FORMAT_NAMES: Final[tuple[str, ...]] = tuple(f.value for f in Format)


def _formats(value: Any, has_rules: bool, has_screenshot: bool) -> list[str]:
    """The formats asked for, each once, in the order given. ``extract`` rules and the
    ``screenshot`` option add their format; the ``extract`` format needs rules."""
    if value is None:
        value = [f.value for f in DEFAULT_FORMATS]
    if (
        not isinstance(value, list | tuple)
        or not value
        or any(v not in FORMAT_NAMES for v in value)
    ):
        raise InvalidOptions(f"options.formats is a non-empty list of {', '.join(FORMAT_NAMES)}")
    formats = list(dict.fromkeys(value))
    if has_rules and Format.EXTRACT not in formats:
        formats.append(Format.EXTRACT.value)
    if Format.EXTRACT in formats and not has_rules:
        raise InvalidOptions("options.formats has extract: give the rules in options.extract")
    if has_screenshot and Format.SCREENSHOT not in formats:
        formats.append(Format.SCREENSHOT.value)
    return formats


def _extract(value: Any) -> str | None:
    """Extraction rules as canonical JSON: an object from a person, or the JSON string a
    decoded record carries. A selector that does not compile is refused here, never in a
    worker."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidOptions(f"options.extract is not valid JSON: {exc}") from None
    try:
        return rules_to_json(parse_extract_rules(value))
    except InvalidExtract as exc:
        raise InvalidOptions(
            f"options.{exc}" if str(exc).startswith("extract") else str(exc)
        ) from None


def _flag(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidOptions(f"options.{name} must be true or false")
    return value


def _timeout(value: Any, limits: JobLimits) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= limits.max_timeout_s
    ):
        raise InvalidOptions(f"options.timeout_s must be a number in (0, {limits.max_timeout_s:g}]")
    return float(value)


def _max_body(value: Any, limits: JobLimits) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidOptions("options.max_body_bytes must be a positive integer")
    if value > limits.max_body_bytes:
        raise InvalidOptions(
            f"options.max_body_bytes must be at most {limits.max_body_bytes} on this deployment"
        )
    return value


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidOptions("options.headers must be an object mapping header names to strings")
    if len(value) > MAX_HEADERS:
        raise InvalidOptions(f"options.headers takes at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, val in value.items():
        if not isinstance(name, str) or not isinstance(val, str):
            raise InvalidOptions("options.headers must map header names to strings")
        if len(name) > MAX_HEADER_NAME or not _TOKEN.fullmatch(name):
            raise InvalidOptions(
                f"options.headers: {name[:40]!r} is not a valid header name"
                " (letters, digits and !#$%&'*+-.^_`|~ only)"
            )
        lower = name.lower()
        if lower in FORBIDDEN_HEADERS:
            raise InvalidOptions(
                f"options.headers: {name} may not be set by a job (framing, hop-by-hop and Host"
                " headers are the fetcher's)"
            )
        if lower in seen:
            raise InvalidOptions(f"options.headers: {name} is given twice (names ignore case)")
        seen.add(lower)
        if len(val) > MAX_HEADER_VALUE or _CONTROL.search(val):
            raise InvalidOptions(
                f"options.headers: the value of {name} must be at most {MAX_HEADER_VALUE}"
                " characters without control characters (no CR, LF or NUL)"
            )
    return dict(value)


def _choice(value: Any, name: str, allowed: tuple[str, ...]) -> Any:
    """``value`` if it is None or one of ``allowed`` (a Literal's values), else raise."""
    if value is not None and value not in allowed:
        raise InvalidOptions(f"options.{name} must be one of {', '.join(allowed)}")
    return value


def _resources(value: Any) -> list[ResourceType]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or any(v not in RESOURCE_TYPES for v in value):
        raise InvalidOptions(f"options.block_resources is a list of {', '.join(RESOURCE_TYPES)}")
    return sorted(set(value))


def _short(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidOptions(f"options.{name} must be a string of 1-{MAX_SHORT_STRING} characters")
    return check_text(value, f"options.{name}")
