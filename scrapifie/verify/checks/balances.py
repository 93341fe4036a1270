"""Checks on the money: each tenant's balances agree with its ledger and reservations, and each
final job was settled exactly once (charged its credits, its reservation released).

What they read comes from one snapshot (``scrapifie.verify.balances``), and everything they
compare is written together in one transaction (the gateway's admission, the results sink's
SETTLE with the final row, ``scrapifie tenants credit``), so no consumer lag excuses a
difference between them: only a reservation whose job's result is still on its way is pending.
"""

from __future__ import annotations

from schemas.records import FINAL_STATUSES
from scrapifie.verify.report import Check
from scrapifie.verify.state import Db, KafkaState, fmt
from scrapifie.verify.topology import Topology

__all__ = ["check_balances", "check_settlements"]


def check_balances(db: Db) -> Check:
    check = Check(
        "balances",
        "each tenant's credits = the sum of its ledger; reserved and open_jobs = its unreleased"
        " reservations",
    )
    for tenant, b in db.balances.items():
        check.checked += 1
        problems = []
        if b.credits != b.ledger:
            problems.append(
                f"credits {b.credits}, but its credit_ledger sums to {b.ledger}"
                f" ({b.credits - b.ledger:+} unrecorded)"
            )
        if b.reserved != b.held:
            problems.append(f"reserved {b.reserved}, but unreleased reservations hold {b.held}")
        if b.open_jobs != b.holding:
            problems.append(f"open_jobs {b.open_jobs}, but {b.holding} reservations are unreleased")
        if problems:
            check.fail(f"{tenant}: {'; '.join(problems)}")
    return check


def check_settlements(topo: Topology, kafka: KafkaState, db: Db) -> Check:
    """Final jobs of the window charged their credits once (one 'charge' row of -credits; none
    when free or of an unknown tenant), no charge without a final job, and no final job still
    holding a reservation (all reservations, whatever their age)."""
    check = Check(
        "settlements",
        "each final job is charged once (a 'charge' row of -jobs.credits) and its reservation"
        " released; nothing else is charged",
    )
    for (tenant, job_id), s in db.settled.items():
        check.checked += 1
        expected = (-s.credits,) if s.credits and s.tenant_known else ()
        if s.charges != expected:
            check.fail(
                f"{tenant}/{job_id}: charged {s.credits} credits, but its 'charge' rows are"
                f" {list(s.charges)} (expected {list(expected)})"
            )
    for (tenant, job_id), (delta, status) in db.stray_charges.items():
        check.fail(
            f"{tenant}/{job_id}: a 'charge' row of {delta} for a job "
            + ("without a row" if status is None else f"still {status}")
        )
    for job, r in db.open_reservations.items():
        check.checked += 1
        label = f"{job[0]}/{job[1]}: {r.amount} credits reserved at {r.created_at.isoformat()}"
        if r.status in FINAL_STATUSES:
            finished = r.finished_at.isoformat() if r.finished_at else "?"
            check.fail(f"{label} still held, though the job {r.status} at {finished}")
            continue
        results = kafka.scan.results.get(job, [])
        if any(kafka.processed(topo.results_group, w) for w in results):
            # The row is not final either: jobs_final reports the job; this is its reservation.
            check.fail(f"{label} still held, though its result at {fmt(results[0])} was consumed")
        elif results:
            check.wait(f"{label}: its result at {fmt(results[0])} is not written yet")
        # Otherwise the job is queued or running (or has no row yet): nothing to settle.
    return check
