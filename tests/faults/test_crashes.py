"""Processes SIGKILLed mid-work: nothing lost, nothing duplicated (scenarios 1 and 2)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas import default_codec
from schemas.records import FINAL_STATUSES, Metering, ScrapeResult
from tests.faults.conftest import StackFactory
from tests.faults.helpers import (
    assert_consistent,
    attempt_count,
    final_count,
    settled_verify,
    submit,
    summary,
    wait_final,
)
from tests.faults.infra import FaultStack, SlowSite

pytestmark = pytest.mark.faults

IN_FLIGHT = "scrapifie_fetches_in_flight"
SINK_APP = "faults-sink"
WORKER_PORT = "SCRAPIFIE_WORKER_METRICS_PORT"


async def _wait_in_flight(stack: FaultStack, timeout_s: float = 120) -> float:
    """Wait until the worker reports fetches in flight; returns when."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        n = await asyncio.to_thread(stack.metric, WORKER_PORT, IN_FLIGHT)
        if n:
            return time.monotonic()
        assert stack.procs["worker"].poll() is None, stack.log_tail()
        await asyncio.sleep(0.05)
    raise AssertionError(f"no fetch in flight within {timeout_s}s\n{stack.log_tail()}")


def _restart_with(stack: FaultStack, name: str, env: dict[str, str]) -> None:
    """Restart one process with extra variables (kept for its later restarts)."""
    stack.stop(name)
    stack.start(name, env={**stack.proc_env.get(name, {}), **env})
    stack.restarts.pop(name, None)


async def test_sigkill_worker_with_fetches_in_flight(
    make_stack: StackFactory, slow_site: SlowSite, record: Callable[..., None]
) -> None:
    """Scenario 1: 300 jobs against a site answering in 0.5-2 s; the worker is SIGKILLed five
    times at random moments while fetches are in flight, and restarted at once."""
    stack = await make_stack(WORKER__MAX_IN_FLIGHT="32")
    n = 300
    rng = random.Random(20261123)
    submitting = asyncio.create_task(
        submit(stack, [f"{slow_site.base}/slow/{i}" for i in range(n)], concurrency=32)
    )
    in_flight_at_kill: list[float | None] = []
    resumed_after: list[float] = []
    for _ in range(5):
        await _wait_in_flight(stack)
        await asyncio.sleep(rng.uniform(0.1, 1.5))
        in_flight_at_kill.append(await asyncio.to_thread(stack.metric, WORKER_PORT, IN_FLIGHT))
        stack.kill("worker")
        restarted = time.monotonic()
        stack.start("worker")
        resumed_after.append(await _wait_in_flight(stack) - restarted)
    sub = await submitting
    assert not sub.gave_up
    done = await wait_final(stack.dsn, sub.ids, timeout_s=240)
    code, report, settle_s = await settled_verify(stack)
    figures = summary(report)
    record(
        "1 worker SIGKILL x5",
        **figures,
        kills=len(in_flight_at_kill),
        in_flight_at_kill=in_flight_at_kill,
        resumed_after_restart_s=[round(s, 1) for s in resumed_after],
        all_final_after_last_restart_s=round(done - restarted, 1),
        verify_settle_s=round(settle_s, 1),
    )
    assert all(in_flight_at_kill), in_flight_at_kill  # every kill cut fetches short
    assert_consistent(report, code, stack, sub.ids)
    assert figures["succeeded"] == n
    # The kills cut fetches short: their jobs were fetched again and metered again, once.
    assert figures["metering_records"] > figures["metering_events"] == n


# -- scenario 2 ----------------------------------------------------------------------------------
_TRIGGERS = """
CREATE FUNCTION faults_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('faults_written', TG_ARGV[0]);
    RETURN NULL;
END $$;
CREATE TRIGGER faults_results AFTER INSERT OR UPDATE ON jobs FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed')) EXECUTE FUNCTION faults_notify('results');
CREATE TRIGGER faults_ledger AFTER INSERT ON attempts FOR EACH ROW
    EXECUTE FUNCTION faults_notify('ledger');
"""


async def _durable_but_uncommitted(stack: FaultStack) -> dict[str, int]:
    """Records whose write is durable in PostgreSQL while the sink's offset is not committed:
    the tail of each sink's input after its committed offset, matched against the rows."""
    codec = default_codec()
    prefix = stack.kafka.topic_prefix
    topics = stack.kafka.topics
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=17 * 1024 * 1024,
    )
    await admin.start()
    await consumer.start()
    tails: dict[str, set[str]] = {"results": set(), "ledger": set()}
    try:
        for sink, topic in (("results", topics.results), ("ledger", topics.metering)):
            committed = await admin.list_consumer_group_offsets(f"scrapifie-{prefix}sink-{sink}")
            described = await admin.describe_topics([topic])
            tps = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            todo = {}
            for tp in tps:
                start = max(committed[tp].offset, 0) if tp in committed else 0
                if start < ends[tp]:
                    consumer.seek(tp, start)
                    todo[tp] = ends[tp]
            while todo:
                for tp, msgs in (await consumer.getmany(*todo, timeout_ms=1000)).items():
                    for m in msgs:
                        if m.offset < todo.get(tp, -1):
                            if sink == "results":
                                tails[sink].add(codec.read(m.value, ScrapeResult).job_id)
                            else:
                                tails[sink].add(codec.read(m.value, Metering).event_id)
                        if m.offset >= todo.get(tp, 0) - 1:
                            todo.pop(tp, None)
    finally:
        await consumer.stop()
        await admin.close()
    async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM jobs WHERE job_id = ANY(%s) AND status = ANY(%s)",
            (list(tails["results"]), list(FINAL_STATUSES)),
        )
        results = (await cur.fetchone() or (0,))[0]
        cur = await conn.execute(
            "SELECT count(*) FROM attempts WHERE event_id = ANY(%s)", (list(tails["ledger"]),)
        )
        ledger = (await cur.fetchone() or (0,))[0]
    return {"results": int(results), "ledger": int(ledger)}


class SinkKiller(threading.Thread):
    """Catch the sink process between its writes and its offset commits, and SIGKILL it there.

    Both of its consumers (results and ledger) are lined up first: the test holds an EXCLUSIVE
    lock on ``jobs`` and ``attempts`` until each has a batch in hand and waits on the lock in
    its write (seen in pg_stat_activity under the sink's application_name). On the lock's
    release both writes commit at once; on the first NOTIFY the test's triggers send at commit,
    the sink is frozen (SIGSTOP) and the committed offsets are read: rows durable in PostgreSQL
    whose offsets are not committed prove the window. If a sink not caught yet is in it, the
    process is SIGKILLed there and restarted; else it resumes and we retry, until both sinks
    have been caught (often together, in one kill)."""

    def __init__(self, stack: FaultStack, rounds: int = 40) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.rounds = rounds
        self.tries = 0
        self.wanted = {"results", "ledger"}
        self.kills: list[dict[str, int]] = []
        self.last_kill_at = 0.0
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.listening = threading.Event()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc

    def _wait_blocked(self, conn: psycopg.Connection[Any], writers: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stop_event.is_set():
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = %s AND wait_event_type = 'Lock'",
                (SINK_APP,),
            ).fetchone()
            if row is not None and row[0] >= writers:
                return True
            time.sleep(0.1)
        return False

    def _wanted_commit(self, conn: psycopg.Connection[Any], timeout_s: float) -> bool:
        """Wait for the first write of a sink still wanted to commit."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            for note in conn.notifies(timeout=left, stop_after=1):
                if note.payload in self.wanted:
                    return True
        return False

    def _signal(self, sig: signal.Signals) -> None:
        os.kill(self.stack.procs["sink"].pid, sig)

    def _run(self) -> None:
        with (
            psycopg.connect(self.stack.dsn, autocommit=True) as conn,
            psycopg.connect(self.stack.dsn) as locker,
        ):
            conn.execute("LISTEN faults_written")
            self.listening.set()
            while self.wanted and not self.stop_event.is_set() and self.tries < self.rounds:
                locker.execute("LOCK TABLE jobs, attempts IN EXCLUSIVE MODE")
                lined_up = self._wait_blocked(conn, writers=2, timeout_s=60)
                list(conn.notifies(timeout=0.05))  # writes from before the lock: stale
                locker.commit()
                if not lined_up or not self._wanted_commit(conn, timeout_s=10):
                    continue
                self._signal(signal.SIGSTOP)
                self.tries += 1
                time.sleep(0.3)  # a commit already on the wire lands meanwhile
                caught = asyncio.run(_durable_but_uncommitted(self.stack))
                if any(caught[sink] for sink in self.wanted):
                    self.stack.kill("sink")
                    self.last_kill_at = time.monotonic()
                    self.kills.append(caught)
                    self.wanted -= {sink for sink, n in caught.items() if n}
                    self.stack.start("sink")
                else:
                    self._signal(signal.SIGCONT)


async def test_sigkill_sink_between_write_and_commit(
    make_stack: StackFactory, slow_site: SlowSite, record: Callable[..., None]
) -> None:
    """Scenario 2: 300 jobs; the sink process is SIGKILLed exactly between durable writes and
    their offset commits (proved by reading the committed offsets while the sink is frozen),
    in both of its sinks (results and ledger), and restarted."""
    stack = await make_stack()
    async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
        await conn.execute(_TRIGGERS)
    # The sink's own database sessions, recognisable in pg_stat_activity.
    _restart_with(
        stack, "sink", {"SCRAPIFIE_POSTGRES__DSN": f"{stack.dsn}?application_name={SINK_APP}"}
    )
    killer = SinkKiller(stack)
    killer.start()
    assert await asyncio.to_thread(killer.listening.wait, 10)
    n = 300
    # 30 s of submissions: work keeps coming while the killer lines up the sinks, and after a
    # kill the restarted sink finds a backlog in both of its inputs.
    sub = await submit(
        stack, [f"{slow_site.base}/page/{i}" for i in range(n)], rate_per_s=10, concurrency=8
    )
    while killer.is_alive():  # until both sinks are caught, or nothing is left to catch
        if await final_count(stack.dsn, sub.ids) == n and await attempt_count(stack.dsn) == n:
            break
        await asyncio.sleep(0.2)
    killer.stop_event.set()
    await asyncio.to_thread(killer.join, 60)
    assert not sub.gave_up
    assert killer.error is None, killer.error
    done = await wait_final(stack.dsn, sub.ids, timeout_s=120)
    code, report, settle_s = await settled_verify(stack)
    figures = summary(report)
    record(
        "2 sink SIGKILL between write and commit",
        **figures,
        freezes=killer.tries,
        durable_uncommitted_at_kill=killer.kills,
        all_final_after_last_kill_s=round(done - killer.last_kill_at, 1),
        verify_settle_s=round(settle_s, 1),
    )
    assert not killer.wanted, f"{killer.wanted} never caught in the window: {killer.kills}"
    assert_consistent(report, code, stack, sub.ids)
    assert figures["succeeded"] == n
    assert figures["result_records"] == n  # the worker was not disturbed: one result per job
