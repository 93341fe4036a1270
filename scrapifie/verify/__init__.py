"""`scrapifie verify`: check the delivery promises against a live deployment.

The promise: every submitted job ends with exactly one final status, and no row, object or
credit is lost or duplicated, whatever crashed. This command reads what the pipeline holds —
PostgreSQL, the object store and the Kafka topics (requests, tier and delay topics, results,
metering, routing, DLQ) — for the jobs created within ``--since`` and checks:

========================  ==================================================================
check                     broken when
========================  ==================================================================
submitted_jobs_have_rows  a job published to scrape.requests or a tier topic has no row,
                          though the ledger sink has committed past it
jobs_final                a job is not final, though its result was written (the results
                          sink committed past it), or though every request record of it was
                          consumed (each consumption leaves a result or a next record)
rows_consistent           a final row contradicts itself (succeeded without content hash,
                          failed without error code, content under a foreign key...)
duplicate_attempts        two attempt rows for one (tenant, job, tier, attempt)
metering_vs_attempts      a metering event has no attempt row though the ledger sink committed
                          past it, or an attempt row has no metering event
credits                   a final job's last attempt is charged other than its price (tier,
                          cache hit, robots refusal or failure: schemas/prices.py), an earlier
                          attempt is charged at all, or its attempts' sum differs from what
                          the job was charged (jobs.credits)
balances                  a tenant's credits differ from the sum of its credit_ledger, or its
                          reserved/open_jobs from its unreleased reservations
settlements               a final job has other 'charge' rows than one of -jobs.credits (none
                          when free), a charge has no final job, or a reservation is still
                          held by a job that ended (or whose result was consumed)
missing_objects           a succeeded row's content object is absent
extra_objects             an object exists that no succeeded row owns
content_integrity         a sample of objects does not hash to their rows' content_sha256
dlq                       an undecodable record on a consumed input topic has no DLQ record
                          though its consumer committed past it (more than one: a warning)
========================  ==================================================================

Anything still in flight (consumer lag, a job being fetched or waiting in a delay topic) is
``pending``, not broken. The order of the reads makes that distinction exact: committed offsets
first, then the topics up to their end offsets at that moment, then PostgreSQL, then the object
store, while every component writes the other way round (object before row, row before commit,
output before input offset). ``--since`` must lie within the topics' retention. Balances,
ledger and reservations are read in one snapshot and checked for every tenant, all time: they
move together in one transaction, so no lag excuses a difference. Exit status: 0 every
invariant holds (work may be pending), 1 an invariant is broken, 2 a backend could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from scrapifie.settings import Settings
from scrapifie.verify.checks import check_integrity, run_checks
from scrapifie.verify.kafka import read_kafka
from scrapifie.verify.postgres import object_owners, read_db
from scrapifie.verify.report import Check, Progress, figures, render
from scrapifie.verify.state import VerifyError
from scrapifie.verify.store import list_objects
from scrapifie.verify.topology import Topology

__all__ = ["Check", "VerifyError", "run_verify"]


def run_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Entry point of ``scrapifie verify [--since INTERVAL] [--json]``; returns the exit status."""
    try:
        report = asyncio.run(_verify(settings, args.since, Progress()))
    except VerifyError as exc:
        if args.json:
            print(json.dumps({"ok": False, "exit_code": 2, "error": str(exc)}))
        print(f"verify: cannot verify: {exc}", file=sys.stderr)
        return 2
    code = 0 if report["ok"] else 1
    report["exit_code"] = code
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render(report))
    return code


async def _verify(settings: Settings, since: str, progress: Progress) -> dict[str, Any]:
    """The report on jobs created within ``since`` (a PostgreSQL interval); raises
    :class:`VerifyError` when a backend cannot be read."""
    topo = Topology.from_settings(settings)
    prices = settings.prices
    started = time.monotonic()
    wall_start = datetime.now(UTC)
    dsn = settings.dsn()
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise VerifyError(f"PostgreSQL unreachable: {exc}") from exc
    async with conn:
        try:
            cur = await conn.execute("SELECT now() - %s::interval, now()", (since,))
        except psycopg.Error as exc:
            raise VerifyError(f"--since {since!r} is not a PostgreSQL interval") from exc
        row = await cur.fetchone()
        assert row is not None
        cutoff: datetime = row[0]
        progress.say(f"checking jobs created since {cutoff.isoformat()}")
        # The order of the reads is the one the docstring above relies on.
        kafka = await read_kafka(settings, topo, cutoff, progress)
        db = await read_db(conn, cutoff, kafka.scan, progress)
        objects = await list_objects(settings, progress)
        owners = await object_owners(conn, objects, db)
        checks = run_checks(topo, prices, kafka, db, objects, owners, wall_start)
        checks.append(await check_integrity(settings, db))
    figs = figures(topo, kafka, db, objects, checks)
    return {
        "ok": not any(c.status == "broken" for c in checks),
        "since": since,
        "cutoff": cutoff.isoformat(),
        "checked_at": wall_start.isoformat(),
        "elapsed_s": round(time.monotonic() - started, 2),
        "topic_prefix": settings.kafka.topic_prefix,
        "figures": figs,
        "checks": [c.as_dict() for c in checks],
    }
