"""Accounts on the real stack (see conftest.py): the ``scrapifie tenants`` commands run as a user
runs them against the real PostgreSQL, the gateway honouring their keys within a second, the
ledger moving with the balance, the old interface still working, migration 0007 carrying old
keys over, and tenants never seeing each other's jobs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from connectors.db import migrate
from schemas import screenshot_object_key
from scrapifie.admin import add_tenant, hash_key
from scrapifie.local.postgres import LocalPostgres
from tests.integration.conftest import REPO, Stack
from tests.integration.targets import TargetSite

pytestmark = pytest.mark.integration


def _tenants(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scrapifie", "tenants", *args],
        env=stack.env,  # SCRAPIFIE_POSTGRES__DSN: the stack's database
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _ok(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    done = await asyncio.to_thread(_tenants, stack, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


async def _refused(stack: Stack, *args: str) -> str:
    done = await asyncio.to_thread(_tenants, stack, *args)
    assert done.returncode == 1, (args, done.stdout, done.stderr)
    assert done.stdout == "" and done.stderr.startswith("error: "), done
    return done.stderr


async def _usage(stack: Stack, key: str) -> tuple[int, Any]:
    async with httpx.AsyncClient(
        base_url=stack.gateway,
        headers={"Authorization": f"Bearer {key}"},
        trust_env=False,
        timeout=30,
    ) as client:
        resp = await client.get("/v1/usage")
    body = resp.json()
    # The fields these tests are about (the answer has more: reserved credits, rows...).
    fields = ("tenant", "credits_remaining", "attempts", "credits_used", "error")
    return resp.status_code, {k: v for k, v in body.items() if k in fields}


async def _status_within(stack: Stack, key: str, status: int, seconds: float) -> float:
    """Seconds until ``key`` answers ``status`` on /v1/usage (fails after ``seconds``)."""
    started = time.monotonic()
    while True:
        got, body = await _usage(stack, key)
        if got == status:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, (got, body)
        await asyncio.sleep(0.05)


async def _ledger(dsn: str, tenant: str) -> list[tuple[int, str]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT delta, reason FROM credit_ledger WHERE tenant_id = %s ORDER BY id", (tenant,)
        )
        return [(int(d), r) for d, r in await cur.fetchall()]


async def test_tenant_commands_keys_and_credits(stack: Stack) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = await _ok(
        stack, "create", name, "--credits", "500", "--rate", "2.5", "--max-jobs", "3"
    )
    first = created.stdout.strip()
    assert created.stdout == first + "\n" and first.startswith("sk_"), created.stdout
    assert first not in created.stderr and "shown once" in created.stderr
    assert "exists" in await _refused(stack, "create", name)
    assert "bad tenant name" in await _refused(stack, "create", "../etc")

    assert await _usage(stack, first) == (
        200,
        {"tenant": name, "credits_remaining": 500, "attempts": 0, "credits_used": 0},
    )
    second = (await _ok(stack, "keys", "add", name, "--label", "rotation")).stdout.strip()
    assert second.startswith("sk_") and second != first
    assert (await _usage(stack, second))[0] == 200

    shown = json.loads((await _ok(stack, "show", name, "--json")).stdout)
    assert {k: shown[k] for k in ("enabled", "credits", "rate_per_s", "max_jobs")} == {
        "enabled": True,
        "credits": 500,
        "rate_per_s": 2.5,
        "max_jobs": 3,
    }
    assert [k["label"] for k in shown["keys"]] == ["first key", "rotation"]
    assert shown["active_keys"] == 2 and all(k["key_id"].startswith("k_") for k in shown["keys"])
    text = (await _ok(stack, "show", name)).stdout
    assert first not in text and shown["keys"][0]["key_id"] in text and "2.5" in text

    # Credits: every change is a ledger row of the same transaction; never below 0.
    await _ok(stack, "credit", name, "250")
    assert "below 0" in await _refused(stack, "credit", name, "-1000")
    await _ok(stack, "credit", name, "-50")
    await _ok(stack, "credit", name, "10", "--correction")
    assert "must not be 0" in await _refused(stack, "credit", name, "0")
    assert "no tenant" in await _refused(stack, "credit", f"{name}-nobody", "5")
    assert await _ledger(stack.dsn, name) == [
        (500, "grant"),
        (250, "topup"),
        (-50, "correction"),
        (10, "correction"),
    ]
    shown = json.loads((await _ok(stack, "show", name, "--json")).stdout)
    assert shown["credits"] == shown["ledger_sum"] == 710

    await _ok(stack, "set", name, "--rate", "default", "--max-jobs", "7")
    listed = json.loads((await _ok(stack, "list", "--json")).stdout)
    mine = next(t for t in listed if t["tenant_id"] == name)
    assert (mine["rate_per_s"], mine["max_jobs"], mine["credits"]) == (None, 7, 710)
    assert any(line.split()[0] == name for line in (await _ok(stack, "list")).stdout.splitlines())

    # Revoking one key: 401 on every request within about a second; the other key goes on.
    first_id = shown["keys"][0]["key_id"]
    await _ok(stack, "keys", "revoke", name, first_id)
    assert await _status_within(stack, first, 401, 2.0) < 1.5
    assert (await _usage(stack, second))[0] == 200
    again = await _ok(stack, "keys", "revoke", name, first_id)
    assert "already revoked" in again.stderr
    assert "no key" in await _refused(stack, "keys", "revoke", name, "k_000000000000")

    # Disabled: 403 tenant_disabled (the key is right, the account is off); enabled: back.
    await _ok(stack, "disable", name)
    await _status_within(stack, second, 403, 2.0)
    status, body = await _usage(stack, second)
    assert (status, body["error"]["code"]) == (403, "tenant_disabled")
    await _ok(stack, "enable", name)
    await _status_within(stack, second, 200, 2.0)
    assert json.loads((await _ok(stack, "show", name, "--json")).stdout)["active_keys"] == 1


async def test_the_old_interface_still_works(stack: Stack) -> None:
    name = f"old-{uuid.uuid4().hex[:8]}"
    added = await _ok(stack, "--add", name, "--credits", "7")
    prefix = f"tenant {name}: API key "
    assert added.stdout.startswith(prefix), added.stdout
    key = added.stdout.removeprefix(prefix).split()[0]
    assert await _usage(stack, key) == (
        200,
        {"tenant": name, "credits_remaining": 7, "attempts": 0, "credits_used": 0},
    )
    listing = (await _ok(stack)).stdout.splitlines()
    assert any(line.split()[:3] == [name, "yes", "7"] for line in listing), listing
    # add_tenant: an existing tenant keeps its balance and gets one more key; the same key
    # given twice is the same key.
    other = await add_tenant(stack.dsn, name, 1_000_000)
    assert (await _usage(stack, other))[1]["credits_remaining"] == 7
    assert (await _usage(stack, key))[0] == 200
    chosen = f"key-{uuid.uuid4().hex}"
    assert await add_tenant(stack.dsn, name, 0, api_key=chosen) == chosen
    assert await add_tenant(stack.dsn, name, 0, api_key=chosen) == chosen
    assert await _ledger(stack.dsn, name) == [(7, "grant")]


async def test_migration_0007_keeps_the_keys_and_balances_of_existing_tenants(
    postgres: LocalPostgres,
) -> None:
    database = f"mig_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(
        postgres.superuser_conninfo, autocommit=True
    ) as root:
        await root.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(database), sql.Identifier(postgres.user)
            )
        )
    dsn = postgres.dsn.rsplit("/", 1)[0] + f"/{database}"
    try:
        # The schema as 0001-0006 left it, with a tenant of the old kind.
        files = resources.files("connectors").joinpath("migrations")
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute(
                "CREATE TABLE schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for f in sorted((f for f in files.iterdir() if f.name < "0007"), key=lambda f: f.name):
                await conn.execute(f.read_text("utf-8"))
                await conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (f.name,))
            await conn.execute(
                "INSERT INTO tenants (tenant_id, api_key_sha256, credits) VALUES"
                " ('before', %s, 42), ('broke', %s, 0)",
                (hash_key("sk_before"), hash_key("sk_broke")),
            )
        assert "0007_accounts.sql" in await migrate(dsn)
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            cur = await conn.execute(
                "SELECT tenant_id, key_id, key_sha256, revoked_at FROM api_keys ORDER BY tenant_id"
            )
            rows = await cur.fetchall()
            assert [(r[0], r[2], r[3]) for r in rows] == [
                ("before", hash_key("sk_before"), None),
                ("broke", hash_key("sk_broke"), None),
            ]
            assert all(r[1].startswith("k_") and len(r[1]) == 14 for r in rows)
            cur = await conn.execute(
                "SELECT tenant_id, delta, reason FROM credit_ledger ORDER BY tenant_id"
            )
            assert await cur.fetchall() == [("before", 42, "grant")]
            cur = await conn.execute("SELECT enabled, rate_per_s, max_jobs FROM tenants")
            assert set(await cur.fetchall()) == {(True, None, None)}
            # A job is charged once per reason; rows without a job are not limited.
            for job in ("j1", None, None):
                await conn.execute(
                    "INSERT INTO credit_ledger (tenant_id, delta, reason, job_id)"
                    " VALUES ('before', -1, 'charge', %s)",
                    (job,),
                )
            with pytest.raises(psycopg.errors.UniqueViolation):
                await conn.execute(
                    "INSERT INTO credit_ledger (tenant_id, delta, reason, job_id)"
                    " VALUES ('before', -1, 'charge', 'j1')"
                )
    finally:
        async with await psycopg.AsyncConnection.connect(
            postgres.superuser_conninfo, autocommit=True
        ) as root:
            await root.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )


async def _screenshot_job(stack: Stack) -> str:
    """A succeeded job of the stack's tenant with a stored screenshot (the stack runs no browser
    tier), as the results sink would leave it."""
    job_id = str(uuid.uuid4())
    key = screenshot_object_key(stack.tenant, job_id)
    s3 = stack.s3.client()
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        await asyncio.to_thread(s3.create_bucket, Bucket=stack.s3.bucket)
    await asyncio.to_thread(s3.put_object, Bucket=stack.s3.bucket, Key=key, Body=b"\x89PNG")
    async with await psycopg.AsyncConnection.connect(stack.dsn) as conn:
        await conn.execute(
            "INSERT INTO jobs (tenant_id, job_id, url, status, screenshot_key, created_at)"
            " VALUES (%s, %s, 'http://example.com/', 'succeeded', %s, %s)",
            (stack.tenant, job_id, key, datetime.now(UTC)),
        )
    return job_id


async def test_a_tenant_sees_only_its_own_jobs(stack: Stack, target: TargetSite) -> None:
    other_tenant = f"other-{uuid.uuid4().hex[:8]}"
    other_key = await add_tenant(stack.dsn, other_tenant, 1000)
    mine_url = f"{target.base}/page/{uuid.uuid4().int % 10_000}"
    async with (
        stack.client() as mine,
        httpx.AsyncClient(
            base_url=stack.gateway,
            headers={"Authorization": f"Bearer {other_key}"},
            trust_env=False,
            timeout=60,
        ) as theirs,
    ):
        resp = await mine.post(
            "/v1/jobs",
            params={"wait": 30},
            json={"url": mine_url, "options": {"formats": ["html", "markdown"]}},
        )
        assert resp.status_code == 200 and resp.json()["status"] == "succeeded", resp.text
        job_id = resp.json()["job_id"]
        shot_id = await _screenshot_job(stack)
        paths = [
            f"/v1/jobs/{job_id}",
            f"/v1/jobs/{job_id}/content",
            f"/v1/jobs/{job_id}/content?format=markdown",
            f"/v1/jobs/{shot_id}",
            f"/v1/jobs/{shot_id}/screenshot",
        ]
        for path in paths:
            assert (await mine.get(path)).status_code == 200, path
            resp = await theirs.get(path)
            assert (resp.status_code, resp.json()["error"]["code"]) == (404, "not_found"), path

        usage = (await theirs.get("/v1/usage")).json()
        assert {
            k: usage[k] for k in ("tenant", "credits_remaining", "attempts", "credits_used")
        } == {
            "tenant": other_tenant,
            "credits_remaining": 1000,
            "attempts": 0,
            "credits_used": 0,
        }
        assert (await mine.get("/v1/usage")).json()["tenant"] == stack.tenant

        # The same job id from another tenant, in a batch or alone: a job of its own (job ids
        # are idempotency keys per tenant); the first tenant's job is untouched.
        their_url = f"{target.base}/page/{uuid.uuid4().int % 10_000 + 10_000}"
        resp = await theirs.post(
            "/v1/jobs/batch", json={"jobs": [{"url": their_url, "job_id": job_id}]}
        )
        assert resp.status_code == 202, resp.text
        assert [j["job_id"] for j in resp.json()["jobs"]] == [job_id]
        resp = await theirs.post(
            "/v1/jobs", params={"wait": 30}, json={"url": their_url, "job_id": job_id}
        )
        assert resp.status_code == 200, resp.text
        theirs_job = resp.json()
        assert (theirs_job["url"], theirs_job["status"]) == (their_url, "succeeded"), theirs_job
        ours = (await mine.get(f"/v1/jobs/{job_id}")).json()
        assert (ours["url"], ours["status"]) == (mine_url, "succeeded"), ours
        assert (await mine.get(f"/v1/jobs/{job_id}/content")).text != (
            await theirs.get(f"/v1/jobs/{job_id}/content")
        ).text
