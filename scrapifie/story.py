"""`scrapifie jobs show ID`: a job and its story, for a person."""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = ["render_job"]


def _time(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).strftime("%H:%M:%S.%f")[:-3]


def render_job(job: dict[str, Any]) -> str:
    """The JSON of ``GET /v1/jobs/{id}`` as lines: a summary, then each attempt and escalation
    in the order they happened."""
    status = job["status"]
    where = job["tier"] or job.get("current_tier") or job.get("requested_tier") or "?"
    code = f" {job['error_code']}" if job.get("error_code") else ""
    lines = [
        f"job {job['job_id']}  {status}{code}  (tier {where}, {job['attempts']} attempt"
        f"{'s' if job['attempts'] != 1 else ''}, {job['credits']} credits)",
        f"  url        {job['url']}",
    ]
    if job.get("final_url") and job["final_url"] != job["url"]:
        lines.append(f"  final url  {job['final_url']}")
    if job.get("error_message"):
        lines.append(f"  error      {job['error_message']}")
    if job.get("content_bytes"):
        lines.append(
            f"  content    {job['content_bytes']} bytes {job.get('content_type') or ''}".rstrip()
        )
    lines.append(f"  created    {job['created_at']}  trace {job.get('trace_id') or '-'}")
    if job.get("finished_at"):
        lines.append(f"  finished   {job['finished_at']}")
    if job.get("router_reason"):
        lines.append(f"  routed     {job['router_reason']}")
    for event in job.get("history", []):
        at = _time(event["at"])
        if event["event"] == "attempt":
            http = str(event["http_status"] or "-")
            egress = event.get("egress_pool") or "direct"
            lines.append(
                f"  {at}  attempt {event['attempt']:<2} {event['tier']:<8} {event['outcome']:<9}"
                f" {http:>3} {event.get('error_code') or '':<18} {event['duration_ms']:>6} ms"
                f" {event['credits']:>3} credits  {egress}"
            )
        else:
            marker = f" [{event['marker']}]" if event.get("marker") else ""
            lines.append(
                f"  {at}  escalated {event['from_tier']} -> {event['to_tier']}:"
                f" {event['reason']}{marker}"
            )
    if status == "queued" and job.get("current_tier"):
        lines.append(f"  ...        waiting for the {job['current_tier']} tier")
    return "\n".join(lines)
