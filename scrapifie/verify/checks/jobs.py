"""Checks on jobs: each submitted job has a row, ends final, and its final row is coherent."""

from __future__ import annotations

from schemas import content_object_key, screenshot_object_key
from schemas.records import FINAL_STATUSES, JobStatus
from scrapifie.verify.report import Check
from scrapifie.verify.state import Db, JobRow, KafkaState, TopicScan, Where, fmt
from scrapifie.verify.topology import Topology

__all__ = ["check_final", "check_rows_consistent", "check_rows_exist"]


def check_rows_exist(topo: Topology, kafka: KafkaState, db: Db) -> Check:
    check = Check(
        "submitted_jobs_have_rows",
        "every job published to a request topic has a job row",
    )
    for job, all_wheres in kafka.scan.requests.items():
        wheres = [w for w in all_wheres if w[0] in topo.ingest_topics]
        if not wheres:
            continue
        check.checked += 1
        if db.row(job) is not None:
            continue
        label = f"{job[0]}/{job[1]} at {fmt(wheres[0])}"
        if any(kafka.processed(topo.ledger_group, w) for w in wheres):
            check.fail(f"{label}: no row though the ledger sink committed past it")
        else:
            check.wait(f"{label}: not yet read by the ledger sink")
    return check


def check_final(topo: Topology, kafka: KafkaState, db: Db) -> Check:
    check = Check("jobs_final", "every job ends with exactly one final status (one row)")
    scan = kafka.scan
    jobs = {**db.outside, **db.jobs}
    for job in scan.requests:
        jobs.setdefault(job, JobRow.absent())
    for job, row in jobs.items():
        if row.status == "absent":
            continue  # reported by submitted_jobs_have_rows
        check.checked += 1
        if row.status in FINAL_STATUSES:
            continue
        label = f"{job[0]}/{job[1]} ({row.status})"
        results = scan.results.get(job, [])
        requests = scan.requests.get(job, [])
        if any(kafka.processed(topo.results_group, w) for w in results):
            dlq = _dlq_note(scan, results) or ", yet the row is not final"
            check.fail(f"{label}: its result at {fmt(results[0])} was consumed{dlq}")
            continue
        if results:
            check.wait(f"{label}: result at {fmt(results[0])} not yet written")
            continue
        waiting = [w for w in requests if not kafka.processed(topo.consumer_of[w[0]], w)]
        if requests and not waiting:
            # Every request record of the job was consumed, and each consumption leaves a
            # result or a later request record (retry, escalation, routing): none is left.
            last = max(requests, key=lambda w: w[2])
            dlq = _dlq_note(scan, requests) or ", but no result nor next step"
            check.fail(f"{label}: {fmt(last)} consumed{dlq}")
        elif not requests:
            check.wait(f"{label}: no request record since the cutoff")
        elif all(topo.consumer_of[w[0]] not in kafka.groups for w in waiting):
            check.wait(f"{label}: no consumer of {waiting[-1][0]}")
        else:
            check.wait(f"{label}: in flight at {fmt(waiting[-1])}")
    return check


def check_rows_consistent(db: Db) -> Check:
    check = Check("rows_consistent", "final rows agree with themselves and their content key")
    for (tenant, job_id), r in db.jobs.items():
        if r.status not in FINAL_STATUSES:
            continue
        check.checked += 1
        label = f"{tenant}/{job_id}"
        problems = []
        if r.finished_at is None or r.result_event_id is None:
            problems.append("no finished_at/result_event_id")
        if r.status == JobStatus.SUCCEEDED:
            if r.content_key != content_object_key(tenant, job_id):
                problems.append(f"content_key {r.content_key!r}")
            if not r.content_sha256:
                problems.append("no content_sha256")
            if r.error_code:
                problems.append(f"error_code {r.error_code!r} on success")
            if r.screenshot_key and r.screenshot_key != screenshot_object_key(tenant, job_id):
                problems.append(f"screenshot_key {r.screenshot_key!r}")
        else:
            if not r.error_code:
                problems.append("failed without error_code")
            if r.content_key or r.screenshot_key:
                problems.append("failed with a content or screenshot key")
        if problems:
            check.fail(f"{label}: {', '.join(problems)}")
    return check


def _dlq_note(scan: TopicScan, wheres: list[Where]) -> str:
    reasons = sorted({r for w in wheres for r in scan.dlq.get(w, [])})
    return f" and sent to the DLQ ({', '.join(reasons)})" if reasons else ""
