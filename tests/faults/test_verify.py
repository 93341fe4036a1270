"""``scrapifie verify`` itself: it passes on a healthy deployment and catches each broken
invariant it claims to check (a check that cannot fail proves nothing)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from schemas import content_object_key, screenshot_object_key
from scrapifie.verify.store import parse_object_key
from tests.faults.conftest import StackFactory
from tests.faults.helpers import check, settled_verify, submit, wait_final
from tests.faults.infra import REPO, FaultStack, SlowSite


@pytest.mark.unit
def test_parse_object_key_round_trips() -> None:
    job = str(uuid.uuid4())
    assert parse_object_key(content_object_key("acme", job)) == ("content", "acme", job)
    assert parse_object_key(content_object_key("a/b", job)) == ("content", "a/b", job)
    assert parse_object_key(screenshot_object_key("acme", job)) == ("screenshots", "acme", job)
    assert parse_object_key(f"content/acme/zz/{job}.html.gz") is None  # wrong shard
    assert parse_object_key(f"content/acme/{job[:2]}/{job}.png") is None
    assert parse_object_key("other/thing.html.gz") is None


def _run(stack: FaultStack, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "scrapifie", "verify", *args],
        env=env or stack.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.faults
async def test_verify_catches_each_broken_invariant(
    make_stack: StackFactory, slow_site: SlowSite, record: Callable[..., None]
) -> None:
    # The local object store here (the scenarios use S3): verify lists both kinds.
    stack = await make_stack(STORAGE__BACKEND="local")
    objects = Path(stack.env["SCRAPIFIE_DATA_DIR"]) / "objects"
    sub = await submit(stack, [f"{slow_site.base}/page/{i}" for i in range(12)])
    await wait_final(stack.dsn, sub.ids)
    code, report, _ = await settled_verify(stack)
    assert code == 0 and report["ok"], report
    human = _run(stack)
    assert human.returncode == 0 and "OK: every invariant holds" in human.stdout, human

    # Break one invariant per check, the way a bug would.
    a, b, c, d, e = sub.ids[:5]
    (objects / content_object_key(stack.tenant, a)).unlink()
    stray = content_object_key(stack.tenant, str(uuid.uuid4()))
    (objects / stray).parent.mkdir(parents=True, exist_ok=True)
    (objects / stray).write_bytes(b"orphan")
    async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
        # b: its content no longer matches the row (corruption).
        await conn.execute(
            "UPDATE jobs SET content_sha256 = repeat('0', 64) WHERE job_id = %s", (b,)
        )
        # c: a second attempt row for the same attempt, with its own event id (double charge).
        await conn.execute(
            "INSERT INTO attempts (event_id, job_id, tenant_id, tier, attempt, outcome,"
            " credits, created_at) SELECT %s, job_id, tenant_id, tier, attempt, outcome,"
            " credits, created_at FROM attempts WHERE job_id = %s",
            (str(uuid.uuid4()), c),
        )
        # d: its final row lost (as if a replay had overwritten it).
        await conn.execute("UPDATE jobs SET status = 'queued' WHERE job_id = %s", (d,))
        # e: its attempt charged nothing although it succeeded.
        await conn.execute("UPDATE attempts SET credits = 0 WHERE job_id = %s", (e,))
        # The tenant's balance moved without a ledger row.
        await conn.execute(
            "UPDATE tenants SET credits = credits + 1 WHERE tenant_id = %s", (stack.tenant,)
        )
    code, report = stack.verify()
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    record("verify detects", statuses=statuses)
    assert code == 1 and not report["ok"]
    for name in (
        "missing_objects",
        "extra_objects",
        "content_integrity",
        "duplicate_attempts",
        "metering_vs_attempts",
        "jobs_final",
        "credits",
        "balances",
        "settlements",  # d's charge row, for a job no longer final
    ):
        assert statuses[name] == "broken", (name, check(report, name))
    assert a in str(check(report, "missing_objects")["examples"])
    assert stray in str(check(report, "extra_objects")["examples"])
    assert d in str(check(report, "jobs_final")["examples"])
    assert d in str(check(report, "settlements")["examples"])
    assert "(+1 unrecorded)" in str(check(report, "balances")["examples"])
    assert statuses["dlq"] == statuses["submitted_jobs_have_rows"] == "ok"
    human = _run(stack)
    assert human.returncode == 1 and "BROKEN:" in human.stdout, human.stdout

    # Cannot verify: a bad interval, an unreachable database.
    bad = _run(stack, "--since", "not an interval", "--json")
    assert bad.returncode == 2 and "--since" in bad.stderr, bad
    dead_db = {**stack.env, "SCRAPIFIE_POSTGRES__DSN": "postgresql://x:y@127.0.0.1:1/z"}
    down = _run(stack, "--json", env=dead_db)
    assert down.returncode == 2 and "PostgreSQL unreachable" in down.stderr, down
