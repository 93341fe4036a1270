"""Checks on the ledger: attempt rows are unique, match metering events, and charge right."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping

from schemas.records import FINAL_STATUSES, JobStatus
from scrapifie.verify.report import Check
from scrapifie.verify.state import Attempt, Db, Job, KafkaState, fmt
from scrapifie.verify.topology import Topology

__all__ = ["check_credits", "check_duplicate_attempts", "check_metering"]


def check_duplicate_attempts(db: Db) -> Check:
    check = Check("duplicate_attempts", "one attempt row per (tenant, job, tier, attempt number)")
    count = Counter((a.tenant, a.job_id, a.tier, a.attempt) for a in db.attempts)
    check.checked = len(db.attempts)
    for key, n in count.items():
        if n > 1:
            check.fail(f"{key[0]}/{key[1]} {key[2]}#{key[3]}: {n} rows")
    return check


def check_metering(topo: Topology, kafka: KafkaState, db: Db) -> Check:
    check = Check(
        "metering_vs_attempts",
        "every metering event has exactly one attempt row and every attempt row its event",
    )
    window = {a.event_id: a for a in db.attempts if a.in_window}
    events = kafka.scan.metering
    check.checked = len(events)
    for event_id, ev in events.items():
        if event_id in window:
            continue
        label = f"event {event_id} of {ev.tenant}/{ev.job_id} at {fmt(ev.where[0])}"
        if any(kafka.processed(topo.ledger_group, w) for w in ev.where):
            check.fail(f"{label}: no attempt row though the ledger sink committed past it")
        else:
            check.wait(f"{label}: not yet read by the ledger sink")
    for event_id, a in window.items():
        if event_id not in events:
            check.fail(f"attempt {event_id} of {a.tenant}/{a.job_id}: no metering event")
    return check


def check_credits(prices: Mapping[str, int], db: Db, metering_lag: int) -> Check:
    """``prices``: credits per success by tier (failures are free)."""
    check = Check(
        "credits",
        "attempts charge their tier's price on success only; a job is charged once",
    )
    by_job: dict[Job, list[Attempt]] = defaultdict(list)
    for a in db.attempts:
        by_job[(a.tenant, a.job_id)].append(a)
        expected = prices.get(a.tier, 0) if a.outcome == "ok" else 0
        if a.credits != expected:
            check.fail(
                f"attempt {a.event_id} of {a.tenant}/{a.job_id} ({a.tier}, {a.outcome}):"
                f" {a.credits} credits, expected {expected}"
            )
    for job, r in db.jobs.items():
        if r.status not in FINAL_STATUSES:
            continue
        check.checked += 1
        attempts = by_job.get(job, [])
        label = f"{job[0]}/{job[1]} ({r.status})"
        if not attempts:
            if metering_lag:
                check.wait(f"{label}: no attempt row yet (ledger lag {metering_lag})")
            else:
                check.fail(f"{label}: final without any attempt row")
            continue
        charged = sum(a.credits for a in attempts)
        expected = prices.get(r.tier or "", 0) if r.status == JobStatus.SUCCEEDED else 0
        if charged != expected:
            if metering_lag and charged < expected:
                check.wait(f"{label}: charged {charged} of {expected} so far")
            else:
                check.fail(f"{label}: charged {charged} credits, expected {expected}")
    return check
