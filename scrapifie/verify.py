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
credits                   an attempt is charged other than its tier's price (failures are free),
                          or a final job's attempts charge other than once for its success
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
output before input offset). ``--since`` must lie within the topics' retention. Tenants' opening
balances are not recorded anywhere, so balances are reported (balance + credits used), not
checked. Exit status: 0 every invariant holds (work may be pending), 1 an invariant is broken,
2 a backend could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from connectors.config import StorageConfig
from connectors.storage import StorageError, open_store
from schemas import (
    DELAYS_S,
    TIER_ORDER,
    DecodeError,
    content_object_key,
    default_codec,
    screenshot_object_key,
)
from schemas import headers as hdr
from scrapifie.settings import Settings

__all__ = ["Check", "VerifyError", "run_verify"]

FINAL = ("succeeded", "failed")
EXAMPLES = 20  # examples kept per check and kind
INTEGRITY_SAMPLE = 20  # objects downloaded and hashed
PROGRESS_EVERY_S = 2.0
_FETCH_MAX = 64 * 1024 * 1024

Job = tuple[str, str]  # (tenant, job_id)
Where = tuple[str, int, int]  # (topic, partition, offset)


class VerifyError(Exception):
    """A backend could not be read: nothing can be concluded (exit status 2)."""


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


def run_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Entry point of ``scrapifie verify [--since INTERVAL] [--json]``; returns the exit status."""
    try:
        report = asyncio.run(Verifier(settings, args.since, Progress()).run())
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


# -- Kafka --------------------------------------------------------------------------------------
@dataclass
class Meter:
    tenant: str
    job_id: str
    credits: int
    outcome: str
    where: list[Where] = field(default_factory=list)


@dataclass
class TopicScan:
    """What the topics hold from the cutoff to their end offsets at snapshot time."""

    requests: dict[Job, list[Where]] = field(default_factory=lambda: defaultdict(list))
    results: dict[Job, list[Where]] = field(default_factory=lambda: defaultdict(list))
    metering: dict[str, Meter] = field(default_factory=dict)
    undecodable: list[tuple[Where, str]] = field(default_factory=list)
    dlq: dict[Where, list[str]] = field(default_factory=lambda: defaultdict(list))
    records: Counter[str] = field(default_factory=Counter)


@dataclass
class KafkaState:
    groups: set[str]
    committed: dict[str, dict[tuple[str, int], int]]  # group -> (topic, partition) -> offset
    ends: dict[tuple[str, int], int]
    scan: TopicScan

    def processed(self, group: str | None, where: Where) -> bool:
        """Whether ``group`` had committed past the record at snapshot time."""
        if group is None:
            return False
        topic, partition, offset = where
        return self.committed.get(group, {}).get((topic, partition), -1) > offset

    def lag(self, group: str, topics: Iterable[str]) -> int:
        wanted = set(topics)
        committed = self.committed.get(group, {})
        return sum(
            max(0, end - max(committed.get(tp, 0), 0))
            for tp, end in self.ends.items()
            if tp[0] in wanted
        )


# -- the verifier ---------------------------------------------------------------------------------
class Verifier:
    def __init__(self, settings: Settings, since: str, progress: Progress) -> None:
        self.settings = settings
        self.since = since
        self.progress = progress
        self.codec = default_codec()
        topics = settings.kafka.topics
        prefix = settings.kafka.topic_prefix
        self.tier_topics = {topics.tier(t): t.value for t in TIER_ORDER}
        self.delay_topics = {topics.delay(t, s): t.value for t in TIER_ORDER for s in DELAYS_S}
        # Where a job's ScrapeRequest can be: published (requests, tier topics), or parked.
        self.ingest_topics = [topics.requests, *self.tier_topics]
        self.request_topics = [*self.ingest_topics, *self.delay_topics]
        self.results_topic = topics.results
        self.metering_topic = topics.metering
        self.routing_topic = topics.routing
        self.dlq_topic = topics.dlq
        group = settings.worker.group_prefix
        self.router_group = f"{group}-{prefix}router"
        self.results_group = f"{settings.sink.group_prefix}-{prefix}sink-results"
        self.ledger_group = f"{settings.sink.group_prefix}-{prefix}sink-ledger"
        # The consumer group that processes each input topic (Faust app id = group id). A delay
        # topic is read by its tier's worker, which moves each record back to the tier topic.
        self.consumer_of: dict[str, str] = {
            topics.requests: self.router_group,
            self.routing_topic: self.router_group,
            **{t: f"{group}-{prefix}{tier}" for t, tier in self.tier_topics.items()},
            **{t: f"{group}-{prefix}{tier}" for t, tier in self.delay_topics.items()},
            self.results_topic: self.results_group,
            self.metering_topic: self.ledger_group,
        }
        # Whose undecodable records go to the DLQ with their own offset: every input topic but
        # the delay topics (their records are forwarded as they are, and DLQ'd from there).
        self.dlq_owner = {t: g for t, g in self.consumer_of.items() if t not in self.delay_topics}
        self.prices = dict(settings.worker.credits_per_success)
        self.cutoff = datetime.min.replace(tzinfo=UTC)

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        wall_start = datetime.now(UTC)
        dsn = self.settings.dsn()
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise VerifyError(f"PostgreSQL unreachable: {exc}") from exc
        async with conn:
            try:
                cur = await conn.execute("SELECT now() - %s::interval, now()", (self.since,))
            except psycopg.Error as exc:
                raise VerifyError(f"--since {self.since!r} is not a PostgreSQL interval") from exc
            row = await cur.fetchone()
            assert row is not None
            cutoff: datetime = row[0]
            self.cutoff = cutoff
            self.progress.say(f"checking jobs created since {cutoff.isoformat()}")
            kafka = await self._read_kafka(cutoff)
            db = await self._read_db(conn, cutoff, kafka.scan)
            objects = await self._list_objects()
            owners = await self._object_owners(conn, objects, db)
            checks = self._checks(kafka, db, objects, owners, wall_start)
            checks.append(await self._integrity(db))
        figures = self._figures(kafka, db, objects, checks)
        return {
            "ok": not any(c.status == "broken" for c in checks),
            "since": self.since,
            "cutoff": cutoff.isoformat(),
            "checked_at": wall_start.isoformat(),
            "elapsed_s": round(time.monotonic() - started, 2),
            "topic_prefix": self.settings.kafka.topic_prefix,
            "figures": figures,
            "checks": [c.as_dict() for c in checks],
        }

    # -- reading Kafka ----------------------------------------------------------------------------
    async def _read_kafka(self, cutoff: datetime) -> KafkaState:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import KafkaError

        kcfg = self.settings.kafka
        admin = AIOKafkaAdminClient(
            bootstrap_servers=kcfg.bootstrap,
            client_id=f"{kcfg.client_id}-verify",
            request_timeout_ms=15_000,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kcfg.bootstrap,
            client_id=f"{kcfg.client_id}-verify",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=kcfg.max_message_bytes + 64 * 1024,
            fetch_max_bytes=max(_FETCH_MAX, kcfg.max_message_bytes * 2),
            request_timeout_ms=30_000,
        )
        try:
            async with asyncio.timeout(30):
                await admin.start()
                await consumer.start()
        except (KafkaError, TimeoutError, OSError) as exc:
            await _quietly(admin.close())
            await _quietly(consumer.stop())
            raise VerifyError(f"Kafka unreachable at {kcfg.bootstrap}: {exc!r}") from exc
        try:
            # Order matters (see the module docstring): committed offsets, then end offsets.
            groups = {str(g[0]) for g in await admin.list_consumer_groups()}
            committed: dict[str, dict[tuple[str, int], int]] = {}
            for group in sorted(set(self.consumer_of.values())):
                if group not in groups:
                    continue
                offsets = await admin.list_consumer_group_offsets(group)
                committed[group] = {
                    (tp.topic, tp.partition): int(om.offset) for tp, om in offsets.items()
                }
            existing = set(await admin.list_topics())
            scan_topics = [
                t
                for t in [
                    *self.request_topics,
                    self.results_topic,
                    self.metering_topic,
                    self.routing_topic,
                    self.dlq_topic,
                ]
                if t in existing
            ]
            missing = [t for t in (self.results_topic, self.metering_topic) if t not in existing]
            if missing:
                raise VerifyError(
                    f"topics {missing} do not exist (wrong SCRAPIFIE_KAFKA__TOPIC_PREFIX?)"
                )
            described = await admin.describe_topics(scan_topics)
            tps = [
                TopicPartition(d["topic"], p["partition"])
                for d in described
                for p in sorted(d["partitions"], key=lambda p: int(p["partition"]))
            ]
            consumer.assign(tps)
            ends_raw = await consumer.end_offsets(tps)
            starts_raw = await consumer.offsets_for_times(
                {tp: int(cutoff.timestamp() * 1000) for tp in tps}
            )
            ends = {(tp.topic, tp.partition): int(off) for tp, off in ends_raw.items()}
            scan = TopicScan()
            todo: dict[Any, int] = {}
            for tp in tps:
                hit = starts_raw.get(tp)
                start = int(hit.offset) if hit is not None else ends_raw[tp]
                if start < ends_raw[tp]:
                    consumer.seek(tp, start)
                    todo[tp] = ends_raw[tp]
            total = sum(end - _start(starts_raw.get(tp), end) for tp, end in todo.items())
            self.progress.say(
                f"reading {total} records from {len(scan_topics)} topics "
                f"(prefix {kcfg.topic_prefix!r})"
            )
            await self._scan(consumer, todo, scan, total)
            return KafkaState(groups, committed, ends, scan)
        except KafkaError as exc:
            raise VerifyError(f"Kafka read failed: {exc!r}") from exc
        finally:
            await _quietly(consumer.stop())
            await _quietly(admin.close())

    async def _scan(self, consumer: Any, todo: dict[Any, int], scan: TopicScan, total: int) -> None:
        read = 0
        idle_since = time.monotonic()
        while todo:
            batches = await consumer.getmany(*todo.keys(), timeout_ms=1000)
            if not batches:
                if time.monotonic() - idle_since > 60:
                    raise VerifyError(f"no progress reading {sorted(map(str, todo))} for 60 s")
                continue
            idle_since = time.monotonic()
            for tp, msgs in batches.items():
                end = todo.get(tp)
                if end is None:
                    continue
                for m in msgs:
                    if m.offset >= end:
                        break
                    self._take(m, scan)
                    read += 1
                if (msgs and msgs[-1].offset >= end - 1) or await consumer.position(tp) >= end:
                    todo.pop(tp, None)
                    consumer.pause(tp)
            self.progress.say(f"read {read} of {total} records", force=False)
        self.progress.say(f"read {read} records")

    def _take(self, m: Any, scan: TopicScan) -> None:
        where: Where = (m.topic, m.partition, m.offset)
        value: bytes = m.value or b""
        scan.records[m.topic] += 1
        if m.topic == self.dlq_topic:
            headers = list(m.headers or ())
            origin = (
                hdr.get(headers, hdr.DLQ_TOPIC),
                hdr.get(headers, hdr.DLQ_PARTITION),
                hdr.get(headers, hdr.DLQ_OFFSET),
            )
            reason = hdr.get(headers, hdr.DLQ_REASON) or "?"
            try:
                key = (origin[0] or "?", int(origin[1] or ""), int(origin[2] or ""))
            except ValueError:
                key = ("?", -1, m.offset)  # no (or a garbled) origin: counted, not matched
            scan.dlq[key].append(reason)
            return
        try:
            if m.topic in self.request_topics:
                job = self.codec.decode_request(value)
                scan.requests[(job["tenant"], job["job_id"])].append(where)
            elif m.topic == self.results_topic:
                _, result = self.codec.decode(value, expect="ScrapeResult")
                scan.results[(result["tenant"], result["job_id"])].append(where)
            elif m.topic == self.routing_topic:
                self.codec.decode(value, expect="RouteFeedback")
            elif m.topic == self.metering_topic:
                _, ev = self.codec.decode(value, expect="Metering")
                meter = scan.metering.get(ev["event_id"])
                if meter is None:
                    created: datetime = ev["created_at"]
                    meter = Meter(ev["tenant"], ev["job_id"], int(ev["credits"]), ev["outcome"])
                    meter.where.append(where)
                    # Keep only events of the window: attempts rows carry the same created_at.
                    if created >= self.cutoff:
                        scan.metering[ev["event_id"]] = meter
                else:
                    meter.where.append(where)
        except DecodeError as exc:
            scan.undecodable.append((where, exc.reason))

    # -- reading PostgreSQL -----------------------------------------------------------------------
    async def _read_db(
        self, conn: psycopg.AsyncConnection[Any], cutoff: datetime, scan: TopicScan
    ) -> Db:
        self.progress.say("reading jobs and attempts")
        db = Db(cutoff)
        try:
            shots = await _has_column(conn, "jobs", "screenshot_key")
            columns = _JOB_COLUMNS + (", screenshot_key" if shots else ", NULL")
            cur = await conn.execute(
                f"SELECT {columns} FROM jobs WHERE created_at >= %s",  # constant columns
                (cutoff,),
            )
            async for r in cur:
                db.jobs[(r[0], r[1])] = JobRow(*r[2:])
            # Jobs seen on the topics but outside the window (clock edges): look them up too.
            extra = [j for j in scan.requests if j not in db.jobs]
            extra += [j for j in scan.results if j not in db.jobs and j not in extra]
            for chunk in _chunks(extra, 5000):
                cur = await conn.execute(
                    f"SELECT {columns} FROM jobs WHERE (tenant_id, job_id) IN"
                    " (SELECT * FROM unnest(%s::text[], %s::text[]))",
                    ([t for t, _ in chunk], [j for _, j in chunk]),
                )
                async for r in cur:
                    db.outside[(r[0], r[1])] = JobRow(*r[2:])
            cur = await conn.execute(
                "SELECT a.event_id, a.tenant_id, a.job_id, a.tier, a.attempt, a.outcome,"
                " a.credits, a.created_at >= %s FROM attempts a"
                " WHERE a.created_at >= %s OR EXISTS (SELECT 1 FROM jobs j"
                "  WHERE j.tenant_id = a.tenant_id AND j.job_id = a.job_id"
                "  AND j.created_at >= %s)",
                (cutoff, cutoff, cutoff),
            )
            async for r in cur:
                att = Attempt(r[0], r[1], r[2], r[3], int(r[4]), r[5], int(r[6]), bool(r[7]))
                db.attempts.append(att)
            cur = await conn.execute(
                "SELECT t.tenant_id, t.credits,"
                " (SELECT coalesce(sum(a.credits), 0) FROM attempts a"
                "  WHERE a.tenant_id = t.tenant_id) FROM tenants t ORDER BY t.tenant_id"
            )
            db.tenants = {r[0]: (int(r[1]), int(r[2])) for r in await cur.fetchall()}
        except psycopg.Error as exc:
            raise VerifyError(f"PostgreSQL read failed: {exc}") from exc
        return db

    # -- reading the object store -----------------------------------------------------------------
    async def _list_objects(self) -> dict[str, datetime]:
        """Every content object (key → last modified) of the configured store."""
        storage = self.settings.storage
        self.progress.say(f"listing objects ({storage.backend})")
        try:
            if storage.backend == "local":
                root = storage.root or self.settings.data_dir / "objects"
                return await asyncio.to_thread(_list_local, root, self.progress)
            return await asyncio.to_thread(_list_s3, storage, self.progress)
        except (OSError, StorageError) as exc:
            raise VerifyError(f"object store unreadable: {exc}") from exc

    async def _object_owners(
        self, conn: psycopg.AsyncConnection[Any], objects: dict[str, datetime], db: Db
    ) -> dict[Job, JobRow]:
        """Rows of the jobs named by objects that no succeeded row of the window owns."""
        owned = _owned_keys(db.all_rows())
        wanted: list[Job] = []
        for key in objects:
            if key in owned:
                continue
            parsed = parse_object_key(key)
            if parsed is not None:
                wanted.append(parsed[1:])
        rows: dict[Job, JobRow] = {}
        try:
            shots = await _has_column(conn, "jobs", "screenshot_key")
            columns = _JOB_COLUMNS + (", screenshot_key" if shots else ", NULL")
            for chunk in _chunks(wanted, 5000):
                cur = await conn.execute(
                    f"SELECT {columns} FROM jobs WHERE (tenant_id, job_id) IN"
                    " (SELECT * FROM unnest(%s::text[], %s::text[]))",
                    ([t for t, _ in chunk], [j for _, j in chunk]),
                )
                async for r in cur:
                    rows[(r[0], r[1])] = JobRow(*r[2:])
        except psycopg.Error as exc:
            raise VerifyError(f"PostgreSQL read failed: {exc}") from exc
        return rows

    async def _integrity(self, db: Db) -> Check:
        check = Check(
            "content_integrity",
            f"up to {INTEGRITY_SAMPLE} content objects hash to their rows' content_sha256",
        )
        rows = sorted(
            ((job, r) for job, r in db.jobs.items() if r.status == "succeeded" and r.content_key),
            key=lambda item: hashlib.sha256("/".join(item[0]).encode()).hexdigest(),
        )[:INTEGRITY_SAMPLE]
        store = open_store(self.settings.storage, self.settings.data_dir)
        for (tenant, job_id), r in rows:
            assert r.content_key is not None
            check.checked += 1
            try:
                data = await store.get(r.content_key)
            except StorageError as exc:
                raise VerifyError(f"object store unreadable: {exc}") from exc
            if data is None:
                continue  # reported by missing_objects
            try:
                digest = hashlib.sha256(gzip.decompress(data)).hexdigest()
            except (OSError, EOFError) as exc:
                check.fail(f"{tenant}/{job_id}: {r.content_key} is not gzip ({exc})")
                continue
            if digest != r.content_sha256:
                check.fail(f"{tenant}/{job_id}: object sha256 {digest} != row {r.content_sha256}")
        return check

    # -- the checks -------------------------------------------------------------------------------
    def _checks(
        self,
        kafka: KafkaState,
        db: Db,
        objects: dict[str, datetime],
        owners: dict[Job, JobRow],
        started: datetime,
    ) -> list[Check]:
        results_lag = kafka.lag(self.results_group, [self.results_topic])
        metering_lag = kafka.lag(self.ledger_group, [self.metering_topic])
        return [
            self._check_rows_exist(kafka, db),
            self._check_final(kafka, db),
            self._check_rows_consistent(db),
            self._check_duplicate_attempts(db),
            self._check_metering(kafka, db),
            self._check_credits(db, metering_lag),
            self._check_missing_objects(db, objects),
            self._check_extra_objects(db, objects, owners, results_lag, started),
            self._check_dlq(kafka),
        ]

    def _check_rows_exist(self, kafka: KafkaState, db: Db) -> Check:
        check = Check(
            "submitted_jobs_have_rows",
            "every job published to a request topic has a job row",
        )
        for job, all_wheres in kafka.scan.requests.items():
            wheres = [w for w in all_wheres if w[0] in self.ingest_topics]
            if not wheres:
                continue
            check.checked += 1
            if db.row(job) is not None:
                continue
            label = f"{job[0]}/{job[1]} at {_fmt(wheres[0])}"
            if any(kafka.processed(self.ledger_group, w) for w in wheres):
                check.fail(f"{label}: no row though the ledger sink committed past it")
            else:
                check.wait(f"{label}: not yet read by the ledger sink")
        return check

    def _check_final(self, kafka: KafkaState, db: Db) -> Check:
        check = Check("jobs_final", "every job ends with exactly one final status (one row)")
        scan = kafka.scan
        jobs = {**db.outside, **db.jobs}
        for job in scan.requests:
            jobs.setdefault(job, JobRow.absent())
        for job, row in jobs.items():
            if row.status == "absent":
                continue  # reported by submitted_jobs_have_rows
            check.checked += 1
            if row.status in FINAL:
                continue
            label = f"{job[0]}/{job[1]} ({row.status})"
            results = scan.results.get(job, [])
            requests = scan.requests.get(job, [])
            if any(kafka.processed(self.results_group, w) for w in results):
                dlq = _dlq_note(scan, results) or ", yet the row is not final"
                check.fail(f"{label}: its result at {_fmt(results[0])} was consumed{dlq}")
                continue
            if results:
                check.wait(f"{label}: result at {_fmt(results[0])} not yet written")
                continue
            waiting = [w for w in requests if not kafka.processed(self.consumer_of[w[0]], w)]
            if requests and not waiting:
                # Every request record of the job was consumed, and each consumption leaves a
                # result or a later request record (retry, escalation, routing): none is left.
                last = max(requests, key=lambda w: w[2])
                dlq = _dlq_note(scan, requests) or ", but no result nor next step"
                check.fail(f"{label}: {_fmt(last)} consumed{dlq}")
            elif not requests:
                check.wait(f"{label}: no request record since the cutoff")
            elif all(self.consumer_of[w[0]] not in kafka.groups for w in waiting):
                check.wait(f"{label}: no consumer of {waiting[-1][0]}")
            else:
                check.wait(f"{label}: in flight at {_fmt(waiting[-1])}")
        return check

    def _check_rows_consistent(self, db: Db) -> Check:
        check = Check("rows_consistent", "final rows agree with themselves and their content key")
        for (tenant, job_id), r in db.jobs.items():
            if r.status not in FINAL:
                continue
            check.checked += 1
            label = f"{tenant}/{job_id}"
            problems = []
            if r.finished_at is None or r.result_event_id is None:
                problems.append("no finished_at/result_event_id")
            if r.status == "succeeded":
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

    def _check_duplicate_attempts(self, db: Db) -> Check:
        check = Check(
            "duplicate_attempts", "one attempt row per (tenant, job, tier, attempt number)"
        )
        count = Counter((a.tenant, a.job_id, a.tier, a.attempt) for a in db.attempts)
        check.checked = len(db.attempts)
        for key, n in count.items():
            if n > 1:
                check.fail(f"{key[0]}/{key[1]} {key[2]}#{key[3]}: {n} rows")
        return check

    def _check_metering(self, kafka: KafkaState, db: Db) -> Check:
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
            label = f"event {event_id} of {ev.tenant}/{ev.job_id} at {_fmt(ev.where[0])}"
            if any(kafka.processed(self.ledger_group, w) for w in ev.where):
                check.fail(f"{label}: no attempt row though the ledger sink committed past it")
            else:
                check.wait(f"{label}: not yet read by the ledger sink")
        for event_id, a in window.items():
            if event_id not in events:
                check.fail(f"attempt {event_id} of {a.tenant}/{a.job_id}: no metering event")
        return check

    def _check_credits(self, db: Db, metering_lag: int) -> Check:
        check = Check(
            "credits",
            "attempts charge their tier's price on success only; a job is charged once",
        )
        by_job: dict[Job, list[Attempt]] = defaultdict(list)
        for a in db.attempts:
            by_job[(a.tenant, a.job_id)].append(a)
            expected = self.prices.get(a.tier, 0) if a.outcome == "ok" else 0
            if a.credits != expected:
                check.fail(
                    f"attempt {a.event_id} of {a.tenant}/{a.job_id} ({a.tier}, {a.outcome}):"
                    f" {a.credits} credits, expected {expected}"
                )
        for job, r in db.jobs.items():
            if r.status not in FINAL:
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
            expected = self.prices.get(r.tier or "", 0) if r.status == "succeeded" else 0
            if charged != expected:
                if metering_lag and charged < expected:
                    check.wait(f"{label}: charged {charged} of {expected} so far")
                else:
                    check.fail(f"{label}: charged {charged} credits, expected {expected}")
        return check

    def _check_missing_objects(self, db: Db, objects: dict[str, datetime]) -> Check:
        check = Check(
            "missing_objects", "every succeeded row's content (and screenshot) object exists"
        )
        for (tenant, job_id), r in db.jobs.items():
            if r.status != "succeeded":
                continue
            for key in (r.content_key, r.screenshot_key):
                if not key:
                    continue
                check.checked += 1
                if key not in objects:
                    check.fail(f"{tenant}/{job_id}: {key} absent")
        return check

    def _check_extra_objects(
        self,
        db: Db,
        objects: dict[str, datetime],
        owners: dict[Job, JobRow],
        results_lag: int,
        started: datetime,
    ) -> Check:
        check = Check("extra_objects", "every object belongs to a succeeded row")
        owned = _owned_keys(db.all_rows())
        for key, modified in objects.items():
            if modified < db.cutoff:
                continue
            check.checked += 1
            if key in owned:
                continue
            parsed = parse_object_key(key)
            if parsed is None:
                check.fail(f"{key}: not an object key of ours")
                continue
            row = owners.get(parsed[1:])
            if row is not None and row.status == "succeeded" and key in _owned_keys([row]):
                continue
            state = "no row" if row is None else f"row {row.status}"
            if modified >= started:
                check.wait(f"{key}: written during this check ({state})")
            elif (row is None or row.status not in FINAL) and results_lag:
                check.wait(f"{key}: {state}, results sink lag {results_lag}")
            else:
                check.fail(f"{key}: {state}")
        return check

    def _check_dlq(self, kafka: KafkaState) -> Check:
        check = Check(
            "dlq",
            "every undecodable record on a consumed input topic has exactly one DLQ record",
        )
        for where, reason in kafka.scan.undecodable:
            group = self.dlq_owner.get(where[0])
            if where[0] in self.delay_topics:
                continue  # forwarded to the tier topic as it is; its copy there is checked
            check.checked += 1
            label = f"{_fmt(where)} ({reason})"
            copies = len(kafka.scan.dlq.get(where, []))
            if copies == 1:
                continue
            if copies > 1:
                check.warn(f"{label}: {copies} DLQ records (a replay after a crash)")
            elif group is None or group not in kafka.groups:
                check.wait(f"{label}: no consumer of {where[0]} yet")
            elif kafka.processed(group, where):
                check.fail(f"{label}: no DLQ record though {group} committed past it")
            else:
                check.wait(f"{label}: not yet consumed")
        unknown = sum(len(v) for k, v in kafka.scan.dlq.items() if k[0] == "?")
        if unknown:
            check.note = f"{unknown} DLQ records lack their origin headers"
        return check

    # -- figures ----------------------------------------------------------------------------------
    def _figures(
        self, kafka: KafkaState, db: Db, objects: dict[str, datetime], checks: list[Check]
    ) -> dict[str, Any]:
        scan = kafka.scan
        statuses = Counter(r.status for r in db.jobs.values())
        by_check = {c.name: c for c in checks}
        final = statuses["succeeded"] + statuses["failed"]
        meter_records = sum(len(m.where) for m in scan.metering.values())
        dlq_reasons = Counter(reason for reasons in scan.dlq.values() for reason in reasons)
        groups: dict[str, list[str]] = {self.ledger_group: [*self.ingest_topics]}
        for topic, group in self.consumer_of.items():
            groups.setdefault(group, []).append(topic)
        return {
            "jobs": {
                "total": len(db.jobs),
                "final": final,
                "succeeded": statuses["succeeded"],
                "failed": statuses["failed"],
                "unfinished": len(db.jobs) - final,
                "error_codes": dict(
                    Counter(r.error_code for r in db.jobs.values() if r.status == "failed")
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
                g: kafka.lag(g, topics) if g in kafka.groups else None
                for g, topics in groups.items()
            },
            "records_read": dict(scan.records),
            "tenants": {
                t: {"credits": c, "used_all_time": used, "implied_opening_balance": c + used}
                for t, (c, used) in db.tenants.items()
            },
        }


# -- rows -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class JobRow:
    status: str
    tier: str | None
    http_status: int | None
    error_code: str | None
    content_key: str | None
    content_sha256: str | None
    result_event_id: str | None
    finished_at: datetime | None
    created_at: datetime | None
    screenshot_key: str | None

    @classmethod
    def absent(cls) -> JobRow:
        return cls("absent", None, None, None, None, None, None, None, None, None)


@dataclass(frozen=True, slots=True)
class Attempt:
    event_id: str
    tenant: str
    job_id: str
    tier: str
    attempt: int
    outcome: str
    credits: int
    in_window: bool


@dataclass
class Db:
    cutoff: datetime
    jobs: dict[Job, JobRow] = field(default_factory=dict)
    outside: dict[Job, JobRow] = field(default_factory=dict)  # topic jobs created before cutoff
    attempts: list[Attempt] = field(default_factory=list)
    tenants: dict[str, tuple[int, int]] = field(default_factory=dict)

    def row(self, job: Job) -> JobRow | None:
        return self.jobs.get(job) or self.outside.get(job)

    def all_rows(self) -> Iterable[JobRow]:
        yield from self.jobs.values()
        yield from self.outside.values()


# -- helpers --------------------------------------------------------------------------------------
_KINDS = {
    "content": (".html.gz", content_object_key),
    "screenshots": (".png", screenshot_object_key),
}
_JOB_COLUMNS = (
    "tenant_id, job_id, status, tier, http_status, error_code, content_key, content_sha256,"
    " result_event_id, finished_at, created_at"
)


def parse_object_key(key: str) -> tuple[str, str, str] | None:
    """(kind, tenant, job_id) of a key made by schemas.content_object_key ("content") or
    screenshot_object_key ("screenshots"), else None."""
    parts = key.split("/")
    if len(parts) < 4 or parts[0] not in _KINDS:
        return None
    suffix, make = _KINDS[parts[0]]
    if not parts[-1].endswith(suffix):
        return None
    job_id = parts[-1].removesuffix(suffix)
    tenant = "/".join(parts[1:-2])
    return (parts[0], tenant, job_id) if make(tenant, job_id) == key else None


def _owned_keys(rows: Iterable[JobRow]) -> set[str]:
    """The object keys that succeeded rows refer to."""
    return {
        key
        for r in rows
        if r.status == "succeeded"
        for key in (r.content_key, r.screenshot_key)
        if key
    }


async def _has_column(conn: psycopg.AsyncConnection[Any], table: str, column: str) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
        (table, column),
    )
    return await cur.fetchone() is not None


def _list_local(root: Path, progress: Progress) -> dict[str, datetime]:
    out: dict[str, datetime] = {}
    for prefix in _KINDS:
        for dirpath, _dirs, files in os.walk(root / prefix):
            for name in files:
                if name.startswith(".tmp-"):
                    continue  # a write in progress (or one a crash left behind: never linked)
                path = Path(dirpath) / name
                key = path.relative_to(root).as_posix()
                out[key] = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                if len(out) % 10_000 == 0:
                    progress.say(f"listed {len(out)} objects", force=False)
    return out


def _list_s3(cfg: StorageConfig, progress: Progress) -> dict[str, datetime]:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=cfg.s3_endpoint_url,
        region_name=cfg.s3_region,
        aws_access_key_id=cfg.s3_access_key_id.get_secret_value() if cfg.s3_access_key_id else None,
        aws_secret_access_key=(
            cfg.s3_secret_access_key.get_secret_value() if cfg.s3_secret_access_key else None
        ),
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            s3={"addressing_style": "path"},
        ),
    )
    out: dict[str, datetime] = {}
    try:
        for prefix in _KINDS:
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=cfg.s3_bucket, Prefix=f"{prefix}/"
            ):
                for obj in page.get("Contents", []):
                    out[obj["Key"]] = obj["LastModified"]
                progress.say(f"listed {len(out)} objects", force=False)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return out  # nothing written yet
        raise StorageError(f"S3 list_objects_v2 on {cfg.s3_bucket} failed: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"S3 list_objects_v2 on {cfg.s3_bucket} failed: {exc}") from exc
    finally:
        client.close()
    return out


def _chunks(items: list[Job], size: int) -> Iterable[list[Job]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _start(hit: Any, end: int) -> int:
    return int(hit.offset) if hit is not None else end


def _dlq_note(scan: TopicScan, wheres: list[Where]) -> str:
    reasons = sorted({r for w in wheres for r in scan.dlq.get(w, [])})
    return f" and sent to the DLQ ({', '.join(reasons)})" if reasons else ""


def _fmt(where: Where) -> str:
    return f"{where[0]}[{where[1]}]@{where[2]}"


async def _quietly(aw: Any) -> None:
    try:
        await aw
    except Exception:  # closing after a failure: the original error is what matters
        return


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
