"""What the API answers about a job: its row and its story, as typed views.

The OpenAPI document is generated from these classes (connectors/gateway/openapi.py), so the
document and the answers cannot drift apart. A job's story is every attempt (from
scrape.metering) and every escalation (from scrape.escalations) in the order they happened.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from schemas.formats import MEDIA_TYPES, Format
from schemas.records import AttemptOutcome, JobStatus

__all__ = [
    "HISTORY_SQL",
    "AttemptEvent",
    "EscalationEvent",
    "FormatView",
    "JobView",
    "job_view",
    "links",
]


@dataclass(slots=True, kw_only=True)
class AttemptEvent:
    """One attempt: which tier, how it ended, what it cost."""

    event: Literal["attempt"] = "attempt"
    at: datetime
    tier: str
    attempt: int = field(metadata={"doc": "1-based, across all tiers"})
    outcome: AttemptOutcome
    http_status: int | None = None
    error_code: str | None = None
    duration_ms: int
    bytes: int = field(metadata={"doc": "bytes received on the wire"})
    credits: int
    egress_pool: str | None = field(default=None, metadata={"doc": "null: direct"})


@dataclass(slots=True, kw_only=True)
class EscalationEvent:
    """A tier found the page blocked and handed the job to the next tier."""

    event: Literal["escalation"] = "escalation"
    at: datetime
    from_tier: str
    to_tier: str
    reason: str
    http_status: int | None = None
    marker: str | None = field(default=None, metadata={"doc": "the evidence of the block"})


@dataclass(slots=True, kw_only=True)
class FormatView:
    """One format of a succeeded job, served at ``url``."""

    media_type: str = field(metadata={"doc": "raw: the page's own Content-Type"})
    bytes: int | None = field(metadata={"doc": "size (html: before transcoding to UTF-8)"})
    url: str


@dataclass(slots=True, kw_only=True)
class JobView:
    """A job as ``GET /v1/jobs/{id}`` shows it."""

    job_id: str
    tenant: str
    url: str
    status: JobStatus
    requested_tier: str | None = field(metadata={"doc": "the tier asked for (auto: routed)"})
    tier: str | None = field(metadata={"doc": "the tier that finished the job"})
    current_tier: str | None = field(
        metadata={"doc": "while queued: the tier the job is with now (after an escalation)"}
    )
    attempts: int
    credits: int = field(metadata={"doc": "credits charged so far, all attempts"})
    http_status: int | None
    error_code: str | None
    error_message: str | None
    final_url: str | None
    content_type: str | None
    content_bytes: int | None
    content_sha256: str | None
    has_screenshot: bool
    formats: dict[str, FormatView] = field(
        metadata={"doc": "the formats this job has, each at its url (succeeded jobs)"}
    )
    cached_from: str | None = field(
        metadata={"doc": "answered from the result cache (max_age_s): the job that fetched it"}
    )
    router_reason: str | None
    trace_id: str | None
    created_at: datetime
    finished_at: datetime | None
    history: list[AttemptEvent | EscalationEvent]
    links: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _jsonable(asdict(self))
        return out


_STATUSES: Final = frozenset(s.value for s in JobStatus)

# The job's story in one round trip, oldest first (an attempt before the escalation it caused).
HISTORY_SQL: Final = """
SELECT 'attempt' AS event, created_at AS at, tier, attempt, outcome, http_status, error_code,
       duration_ms, bytes, credits, egress_pool,
       NULL AS from_tier, NULL AS to_tier, NULL AS reason, NULL AS marker
  FROM attempts WHERE tenant_id = %(tenant)s AND job_id = %(job_id)s
UNION ALL
SELECT 'escalation', created_at, NULL, NULL, NULL, http_status, NULL, NULL, NULL, NULL, NULL,
       from_tier, to_tier, reason, marker
  FROM escalations WHERE tenant_id = %(tenant)s AND job_id = %(job_id)s
ORDER BY at, event
"""


def job_view(row: dict[str, Any], history: list[dict[str, Any]]) -> JobView:
    """The view of a ``jobs`` row and its ``HISTORY_SQL`` rows."""
    events: list[AttemptEvent | EscalationEvent] = []
    current = row.get("requested_tier")
    for h in history:
        if h["event"] == "attempt":
            events.append(
                AttemptEvent(
                    at=h["at"],
                    tier=h["tier"],
                    attempt=h["attempt"],
                    outcome=AttemptOutcome(h["outcome"]),
                    http_status=h["http_status"],
                    error_code=h["error_code"],
                    duration_ms=h["duration_ms"],
                    bytes=h["bytes"],
                    credits=h["credits"],
                    egress_pool=h["egress_pool"],
                )
            )
            current = h["tier"]
        else:
            events.append(
                EscalationEvent(
                    at=h["at"],
                    from_tier=h["from_tier"],
                    to_tier=h["to_tier"],
                    reason=h["reason"],
                    http_status=h["http_status"],
                    marker=h["marker"],
                )
            )
            current = h["to_tier"]
    status = JobStatus(row["status"]) if row["status"] in _STATUSES else JobStatus.QUEUED
    job_id = row["job_id"]
    return JobView(
        job_id=job_id,
        tenant=row["tenant_id"],
        url=row["url"],
        status=status,
        requested_tier=row.get("requested_tier"),
        tier=row.get("tier"),
        current_tier=None if status is not JobStatus.QUEUED else current,
        attempts=max(row.get("attempts") or 0, sum(isinstance(e, AttemptEvent) for e in events)),
        credits=sum(e.credits for e in events if isinstance(e, AttemptEvent)),
        http_status=row.get("http_status"),
        error_code=row.get("error_code"),
        error_message=row.get("error_message"),
        final_url=row.get("final_url"),
        content_type=row.get("content_type"),
        content_bytes=row.get("content_bytes"),
        content_sha256=row.get("content_sha256"),
        has_screenshot=bool(row.get("screenshot_key")),
        formats=available_formats(row),
        cached_from=row.get("cached_from"),
        router_reason=row.get("router_reason"),
        trace_id=row.get("trace_id"),
        created_at=row["created_at"],
        finished_at=row.get("finished_at"),
        history=events,
        links=links(job_id),
    )


def stored_formats(row: dict[str, Any]) -> dict[str, tuple[str, str, int | None]]:
    """Each format a job's row has: (object key, media type, size). ``html`` and ``raw`` are
    the stored body; derived formats come from the documents manifest the results sink wrote."""
    if row.get("status") != JobStatus.SUCCEEDED:
        return {}
    out: dict[str, tuple[str, str, int | None]] = {}
    if row.get("content_key"):
        size = row.get("content_bytes")
        out[Format.HTML] = (row["content_key"], MEDIA_TYPES[Format.HTML], size)
        out[Format.RAW] = (row["content_key"], row.get("content_type") or "", size)
    for doc in row.get("documents") or ():
        out[doc["format"]] = (doc["key"], doc["media_type"], doc["bytes"])
    if row.get("screenshot_key"):
        out[Format.SCREENSHOT] = (row["screenshot_key"], MEDIA_TYPES[Format.SCREENSHOT], None)
    return out


def available_formats(row: dict[str, Any]) -> dict[str, FormatView]:
    url = f"/v1/jobs/{row['job_id']}/content?format="
    return {
        str(name): FormatView(
            media_type=media or "application/octet-stream", bytes=size, url=url + name
        )
        for name, (_key, media, size) in stored_formats(row).items()
    }


def links(job_id: str) -> dict[str, str]:
    """Where a job's parts are served."""
    return {
        "self": f"/v1/jobs/{job_id}",
        "content": f"/v1/jobs/{job_id}/content",
        "screenshot": f"/v1/jobs/{job_id}/screenshot",
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
