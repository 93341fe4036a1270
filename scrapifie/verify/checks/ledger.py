"""Checks on the ledger: attempt rows are unique, match metering events, and charge right."""

from __future__ import annotations

from collections import Counter, defaultdict

from schemas.errors import ErrorCode
from schemas.prices import Prices
from schemas.records import FINAL_STATUSES, AttemptOutcome
from scrapifie.verify.report import Check
from scrapifie.verify.state import Attempt, Db, Job, KafkaState, fmt
from scrapifie.verify.topology import Topology

__all__ = ["attempt_charge", "check_credits", "check_duplicate_attempts", "check_metering"]


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


def attempt_charge(prices: Prices, a: Attempt) -> int:
    """What attempt ``a`` costs if it is its job's last (schemas/prices.py): its tier's price
    on success (the cache's when answered from it), the robots price for a robots.txt refusal,
    the failure price otherwise. Attempts before the last cost nothing."""
    if a.outcome == AttemptOutcome.OK:
        return prices.cache_hit if a.cache_hit else prices.tier(a.tier)
    if a.error_code == ErrorCode.ROBOTS_DISALLOWED:
        return prices.robots_refusal
    return prices.failed


def check_credits(prices: Prices, db: Db, metering_lag: int) -> Check:
    """A final job's last attempt carries its whole charge, by the price list, and that is
    what its row says it was charged (``jobs.credits``; rows from before 0008 have none and
    are skipped); earlier attempts cost nothing. Attempts of jobs not final (or outside the
    window) may cost nothing or their price as a last attempt; a success always its price."""
    check = Check(
        "credits",
        "a job's last attempt carries its charge by the price list (earlier attempts cost 0),"
        " equal to the job's settled credits",
    )
    by_job: dict[Job, list[Attempt]] = defaultdict(list)
    for a in db.attempts:
        by_job[(a.tenant, a.job_id)].append(a)
    for job, attempts in by_job.items():
        r = db.jobs.get(job)
        if r is not None and r.status in FINAL_STATUSES:
            continue  # checked as a whole below (or skipped: settled before 0008)
        for a in attempts:
            price = attempt_charge(prices, a)
            if a.credits != price and (a.outcome == AttemptOutcome.OK or a.credits != 0):
                check.fail(
                    f"{_label(a)}: {a.credits} credits, expected"
                    + (f" {price}" if a.outcome == AttemptOutcome.OK else f" 0 or {price}")
                )
    for job, r in db.jobs.items():
        if r.status not in FINAL_STATUSES or r.credits is None:
            continue
        check.checked += 1
        attempts = sorted(by_job.get(job, []), key=lambda a: a.attempt)
        label = f"{job[0]}/{job[1]} ({r.status})"
        if not attempts:
            if metering_lag:
                check.wait(f"{label}: no attempt row yet (ledger lag {metering_lag})")
            else:
                check.fail(f"{label}: final without any attempt row")
            continue
        last_no = r.attempts or attempts[-1].attempt
        last = [a for a in attempts if a.attempt == last_no]
        problems = [
            f"{_label(a)} charged {a.credits}"
            for a in attempts
            if a.attempt != last_no and a.credits
        ]
        problems += [
            f"{_label(a)} after the last attempt (#{last_no})"
            for a in attempts
            if a.attempt > last_no
        ]
        for a in last:
            if a.credits != attempt_charge(prices, a):
                problems.append(
                    f"{_label(a)}: {a.credits} credits, expected {attempt_charge(prices, a)}"
                )
        charged = sum(a.credits for a in attempts)
        if last and charged != r.credits:  # without its last attempt, the sum is not known yet
            problems.append(f"its attempts charged {charged}, the job was charged {r.credits}")
        if problems:
            check.fail(f"{label}: {'; '.join(problems)}")
        elif not last:
            if metering_lag:
                check.wait(f"{label}: last attempt #{last_no} not metered yet")
            else:
                check.fail(f"{label}: its last attempt #{last_no} has no row")
    return check


def _label(a: Attempt) -> str:
    return f"attempt {a.event_id} of {a.tenant}/{a.job_id} (#{a.attempt} {a.tier}, {a.outcome})"
