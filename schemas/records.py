"""The records on our topics and the enums they carry, typed, each defined once.

Every record here mirrors an Avro schema in ``schemas/avro`` field for field (a unit test holds
the two together); the codec turns bytes into these classes and back. Code that produces or
consumes a topic works with these classes, never with loose dicts, so that a field added to a
record is added here, in its ``.avsc``, and where it is used: nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final, Literal

from schemas.errors import ErrorCode
from schemas.topics import Tier

__all__ = [
    "AUTO",
    "FINAL_STATUSES",
    "RECORD_TYPES",
    "AttemptOutcome",
    "Document",
    "ErrorCode",
    "Escalation",
    "FetchOptions",
    "JobStatus",
    "Metering",
    "Record",
    "ResourceType",
    "RouteFeedback",
    "ScrapeRequest",
    "ScrapeResult",
    "ScreenshotMode",
    "Tier",
    "WaitUntil",
]

AUTO: Final = "auto"  # a requested tier: let the router choose

WaitUntil = Literal["load", "domcontentloaded", "networkidle"]
ScreenshotMode = Literal["viewport", "full"]
ResourceType = Literal["image", "font", "media", "stylesheet"]


class JobStatus(StrEnum):
    """What ``GET /v1/jobs/{id}`` says of a job. Only these are ever written."""

    QUEUED = "queued"  # accepted; waiting for a worker, being fetched, or between attempts
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINAL_STATUSES: Final = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED})


class AttemptOutcome(StrEnum):
    """How one attempt ended (``Metering.outcome``)."""

    OK = "ok"
    TRANSIENT = "transient"  # retried in the same tier after a backoff
    BLOCKED = "blocked"  # handed to the next tier, or failed at the highest allowed
    FATAL = "fatal"


@dataclass(slots=True, kw_only=True)
class FetchOptions:
    """What a job may ask of its fetch. Validated by :func:`schemas.options.parse_options`."""

    timeout_s: float | None = field(
        default=None, metadata={"doc": "Deadline of the whole fetch, headers and body, seconds."}
    )
    max_body_bytes: int | None = field(
        default=None, metadata={"doc": "Largest decoded body kept; larger fails too_large."}
    )
    headers: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "doc": "Request headers (up to 50; RFC 9110 token names; values without control"
            " characters). Host, framing and hop-by-hop headers are refused."
        },
    )
    wait_until: WaitUntil | None = field(
        default=None, metadata={"doc": "Browser tiers: the page event to wait for."}
    )
    wait_for: str | None = field(
        default=None, metadata={"doc": "Browser tiers: a CSS selector to wait for."}
    )
    screenshot: ScreenshotMode | None = field(
        default=None, metadata={"doc": "Browser tiers: store a PNG of the viewport or full page."}
    )
    block_resources: list[ResourceType] = field(
        default_factory=list, metadata={"doc": "Browser tiers: resource types not loaded."}
    )
    session_id: str | None = field(
        default=None,
        metadata={
            "doc": "Stealth: cookies and storage kept across this session's jobs; pins the"
            " egress proxy of a pool."
        },
    )
    egress_pool: str | None = field(
        default=None, metadata={"doc": "Egress pool to fetch through (default: the tier's)."}
    )
    formats: list[str] = field(
        default_factory=lambda: ["html"],
        metadata={
            "doc": "What to return (schemas/formats.py): html (default), raw, clean_html, text,"
            " markdown, links, metadata, extract, screenshot."
        },
    )
    only_main_content: bool = field(
        default=True,
        metadata={"doc": "clean_html, text and markdown keep the main content only."},
    )
    extract: str | None = field(
        default=None,
        metadata={"doc": "Extraction rules, canonical JSON (schemas/extract.py); implies extract."},
    )
    max_age_s: int | None = field(
        default=None,
        metadata={
            "doc": "Answer from a cached fetch of the same page (schemas/cache.py) made at most"
            " this many seconds ago, without fetching; null: always fetch."
        },
    )
    max_credits: int | None = field(
        default=None,
        metadata={
            "doc": "The most this job may cost: a tier that would cost more is not tried and the"
            " job fails budget_exceeded."
        },
    )


@dataclass(slots=True, kw_only=True)
class ScrapeRequest:
    job_id: str
    tenant: str
    url: str
    tier: str = Tier.HTTP.value  # a Tier, or AUTO on scrape.requests
    max_tier: str = Tier.STEALTH.value
    attempt: int = 1
    tier_attempt: int = 1
    options: FetchOptions = field(default_factory=FetchOptions)
    created_at: datetime
    trace_id: str = ""
    router_reason: str | None = None
    not_before: datetime | None = None
    budget: int | None = None  # credits the gateway reserved for the job (None: not reserved)


@dataclass(slots=True, kw_only=True)
class Document:
    """One format derived from the page (markdown, links…), stored as an object of its own."""

    format: str  # a schemas.formats.Format in DERIVED_FORMATS
    media_type: str
    size: int  # bytes of the document, uncompressed
    key: str  # its object key (schemas.keys.document_object_key)
    content: bytes | None = None  # gzip


@dataclass(slots=True, kw_only=True)
class ScrapeResult:
    event_id: str
    job_id: str
    tenant: str
    url: str
    final_url: str | None = None
    tier: str
    attempts: int
    status: str  # JobStatus.SUCCEEDED or FAILED
    error_code: str | None = None
    error_message: str | None = None
    http_status: int | None = None
    content_type: str | None = None
    content_encoding: str = "gzip"
    content: bytes | None = None
    content_bytes: int = 0
    content_sha256: str | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    screenshot: bytes | None = None
    documents: list[Document] = field(default_factory=list)
    cache_key: str | None = None  # the fetch's identity in the result cache (schemas/cache.py)
    cached_from: str | None = None  # a cache hit: the job whose fetch answered this one
    credits: int = 0  # what the job is charged (schemas.prices), settled with this result
    created_at: datetime
    finished_at: datetime
    duration_ms: int = 0
    trace_id: str = ""


@dataclass(slots=True, kw_only=True)
class Metering:
    event_id: str
    job_id: str
    tenant: str
    tier: str
    attempt: int
    outcome: str  # AttemptOutcome
    error_code: str | None = None
    http_status: int | None = None
    bytes: int = 0
    duration_ms: int = 0
    credits: int = 0
    egress_pool: str | None = None
    cache_hit: bool = False
    created_at: datetime
    trace_id: str = ""


@dataclass(slots=True, kw_only=True)
class Escalation:
    event_id: str
    job_id: str
    tenant: str
    url: str
    from_tier: str
    to_tier: str
    reason: str
    http_status: int | None = None
    marker: str | None = None
    created_at: datetime
    trace_id: str = ""


@dataclass(slots=True, kw_only=True)
class RouteFeedback:
    site: str
    tier: str
    blocked: bool
    marker: str | None = None
    created_at: datetime


Record = ScrapeRequest | ScrapeResult | Metering | Escalation | RouteFeedback
RECORD_TYPES: Final[tuple[type[Record], ...]] = (
    ScrapeRequest,
    ScrapeResult,
    Escalation,
    Metering,
    RouteFeedback,
)
