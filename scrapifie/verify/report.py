"""The outcome of ``scrapifie verify``: one :class:`Check` per invariant, the figures around
them, and the report for people; progress goes to stderr meanwhile."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.records import FINAL_STATUSES, JobStatus
from scrapifie.verify.state import Db, KafkaState
from scrapifie.verify.topology import Topology

__all__ = ["Check", "Progress", "figures", "render"]

EXAMPLES = 20  # examples kept per check and kind
PROGRESS_EVERY_S = 2.0


@dataclass
class Check:
    """One invariant. ``checked`` counts the items looked at; problems keep a few examples."""

    name: str
    description: str
    checked: int = 0
    broken: int = 0
    pending: int = 0
    warnings: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    note: str = ""

    def _add(self, kind: str, example: str) -> None:
        seen = self.examples.setdefault(kind, [])
        if len(seen) < EXAMPLES:
            seen.append(example)

    def fail(self, example: str) -> None:
        self.broken += 1
        self._add("broken", example)

    def wait(self, example: str) -> None:
        self.pending += 1
        self._add("pending", example)

    def warn(self, example: str) -> None:
        self.warnings += 1
        self._add("warnings", example)

    @property
    def status(self) -> str:
        if self.broken:
            return "broken"
        if self.pending:
            return "pending"
        return "warn" if self.warnings else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "description": self.description,
            "checked": self.checked,
            "broken": self.broken,
            "pending": self.pending,
            "warnings": self.warnings,
            "examples": self.examples,
            "note": self.note,
        }


class Progress:
    """Progress lines on stderr for long scans (stdout stays the report)."""

    def __init__(self) -> None:
        self._last = 0.0

    def say(self, message: str, *, force: bool = True) -> None:
        now = time.monotonic()
        if force or now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            print(f"verify: {message}", file=sys.stderr, flush=True)


def figures(
    topo: Topology, kafka: KafkaState, db: Db, objects: dict[str, datetime], checks: list[Check]
) -> dict[str, Any]:
    """The counts around the checks: jobs, records read, objects, DLQ, lag, tenants' credits."""
    scan = kafka.scan
    statuses = Counter(r.status for r in db.jobs.values())
    by_check = {c.name: c for c in checks}
    final = sum(statuses[s] for s in FINAL_STATUSES)
    meter_records = sum(len(m.where) for m in scan.metering.values())
    dlq_reasons = Counter(reason for reasons in scan.dlq.values() for reason in reasons)
    groups: dict[str, list[str]] = {topo.ledger_group: [*topo.ingest_topics]}
    for topic, group in topo.consumer_of.items():
        groups.setdefault(group, []).append(topic)
    return {
        "jobs": {
            "total": len(db.jobs),
            "final": final,
            "succeeded": statuses[JobStatus.SUCCEEDED],
            "failed": statuses[JobStatus.FAILED],
            "unfinished": len(db.jobs) - final,
            "error_codes": dict(
                Counter(r.error_code for r in db.jobs.values() if r.status == JobStatus.FAILED)
            ),
        },
        "requests": {
            "records": sum(len(w) for w in scan.requests.values()),
            "jobs": len(scan.requests),
            "jobs_without_row": by_check["submitted_jobs_have_rows"].broken
            + by_check["submitted_jobs_have_rows"].pending,
        },
        "results": {
            "records": sum(len(w) for w in scan.results.values()),
            "jobs": len(scan.results),
        },
        "attempts": {
            "rows": sum(1 for a in db.attempts if a.in_window),
            "duplicates": by_check["duplicate_attempts"].broken,
            "credits": sum(a.credits for a in db.attempts if a.in_window),
        },
        "metering": {"records": meter_records, "distinct_events": len(scan.metering)},
        "objects": {
            "listed": len(objects),
            "in_window": sum(1 for m in objects.values() if m >= db.cutoff),
            "missing": by_check["missing_objects"].broken,
            "extra": by_check["extra_objects"].broken,
        },
        "dlq": {
            "records": sum(dlq_reasons.values()),
            "by_reason": dict(dlq_reasons),
            "undecodable_inputs": len(scan.undecodable),
        },
        "lag": {
            g: kafka.lag(g, topics) if g in kafka.groups else None for g, topics in groups.items()
        },
        "records_read": dict(scan.records),
        "tenants": {
            t: {
                "credits": b.credits,
                "reserved": b.reserved,
                "open_jobs": b.open_jobs,
                "ledger": b.ledger,
                "used_all_time": b.used,
                "implied_opening_balance": b.credits + b.used,
            }
            for t, b in db.balances.items()
        },
    }


def render(report: dict[str, Any]) -> str:
    """The report as a table for people."""
    f = report["figures"]
    jobs = f["jobs"]
    lines = [
        f"scrapifie verify: jobs created since {report['cutoff']} ({report['since']}),"
        f" prefix {report['topic_prefix']!r}, {report['elapsed_s']} s",
        f"jobs {jobs['total']}: {jobs['succeeded']} succeeded, {jobs['failed']} failed,"
        f" {jobs['unfinished']} unfinished"
        + (f"  errors {jobs['error_codes']}" if jobs["error_codes"] else ""),
        f"attempts {f['attempts']['rows']} (credits {f['attempts']['credits']}),"
        f" metering events {f['metering']['distinct_events']}"
        f" ({f['metering']['records']} records), objects {f['objects']['in_window']}"
        f" in window ({f['objects']['listed']} listed), DLQ {f['dlq']['records']}"
        + (f" {f['dlq']['by_reason']}" if f["dlq"]["by_reason"] else ""),
        "lag " + ", ".join(f"{g}={n}" for g, n in f["lag"].items() if n is not None),
        "",
        f"{'check':26} {'status':8} {'checked':>8} {'broken':>7} {'pending':>8}",
    ]
    for c in report["checks"]:
        lines.append(
            f"{c['name']:26} {c['status']:8} {c['checked']:>8} {c['broken']:>7} {c['pending']:>8}"
        )
    for c in report["checks"]:
        for kind, examples in c["examples"].items():
            for ex in examples[:5]:
                lines.append(f"  {c['name']} {kind}: {ex}")
    lines.append("")
    lines.append(
        "OK: every invariant holds"
        + (
            " (some work still pending)"
            if any(c["status"] == "pending" for c in report["checks"])
            else ""
        )
        if report["ok"]
        else "BROKEN: " + ", ".join(c["name"] for c in report["checks"] if c["status"] == "broken")
    )
    return "\n".join(lines)
