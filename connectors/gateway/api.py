"""The gateway's HTTP vocabulary: its error type and body, what a request carries, and the
JSON it answers with. No I/O beyond reading a request's body."""

from __future__ import annotations

import json
import re
from typing import Any, Final

from aiohttp import web

from connectors.gateway.views import links
from schemas.records import JobStatus, ScrapeRequest

__all__ = [
    "SUBMISSION_FIELDS",
    "ApiError",
    "accepted",
    "error_response",
    "json_body",
    "request_trace_id",
    "wait_param",
]

# What a trace id may hold: it travels in Kafka headers, Avro strings, log lines and text columns.
_TRACE_ID = re.compile(r"[\x21-\x7e]+")


class ApiError(Exception):
    """Answered as ``{"error": {"code": code, "message": message}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


async def json_body(request: web.Request) -> Any:
    """The request's body as JSON; 400 ``invalid_json`` for anything ``json`` cannot load."""
    raw = await request.read()
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise ApiError(400, "invalid_json", "body is nested too deeply") from exc
    except ValueError as exc:  # also invalid UTF-8 and integers past Python's digit limit
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc


def request_trace_id(header: str | None, default: str) -> str:
    """The client's X-Request-ID (its first 128 characters), or ``default`` if none is sent."""
    if header is None:
        return default
    if not _TRACE_ID.fullmatch(header):
        raise ApiError(
            400, "invalid_request", "X-Request-ID must be visible ASCII characters (no spaces)"
        )
    return header[:128]


def wait_param(request: web.Request, max_wait_s: float) -> float:
    """Seconds of ``?wait=`` (0 when absent); 400 unless a number within ``[0, max_wait_s]``."""
    raw = request.query.get("wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_request", "wait must be a number of seconds") from exc
    if not 0 <= value <= max_wait_s:
        raise ApiError(400, "invalid_request", f"wait must be between 0 and {max_wait_s:g} seconds")
    return value


# The fields of a job submission (POST /v1/jobs, each item of a batch); anything else is 400.
SUBMISSION_FIELDS: Final = frozenset({"url", "tier", "max_tier", "job_id", "options"})


def accepted(job: ScrapeRequest) -> dict[str, Any]:
    """The 202 body of an accepted job."""
    return {
        "job_id": job.job_id,
        "status": JobStatus.QUEUED.value,
        "tier": job.tier,
        "trace_id": job.trace_id,
        "links": links(job.job_id),
    }
