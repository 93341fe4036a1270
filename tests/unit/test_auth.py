"""The gateway's API-key check (connectors/gateway/auth.py), a fake key table and a fake clock: a
revocation or a disabled tenant shows within the cache's second, known keys keep working while
the database is away, and the ``tenants`` command line parses as documented."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from connectors.gateway.api import ApiError
from connectors.gateway.auth import KEY_CACHE_TTL_S, Authenticator
from scrapifie.cli import _parser
from scrapifie.tenants import DEFAULT

pytestmark = pytest.mark.unit

KEY = "sk_live"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()
BEARER = f"Bearer {KEY}"


class Keys:
    """A fake ``api_keys`` lookup: rows by digest, an outage switch, a call count."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {
            DIGEST: {"tenant_id": "acme", "revoked": False, "enabled": True}
        }
        self.down = False
        self.hang = False
        self.calls = 0

    async def __call__(self, digest: str) -> dict[str, Any] | None:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(3600)
        if self.down:
            raise ApiError(503, "unavailable", "the job database is unavailable")
        await asyncio.sleep(0)
        return self.rows.get(digest)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _status(auth: Authenticator, header: str | None = BEARER) -> tuple[int, str]:
    try:
        return 200, await auth.tenant(header)
    except ApiError as exc:
        return exc.status, exc.code


async def test_bad_headers_and_unknown_keys_get_401() -> None:
    auth = Authenticator(Keys())
    for header in (None, "", "Bearer ", "Bearer   ", "Basic abc", "bearer sk_live"):
        assert await _status(auth, header) == (401, "unauthorized"), header
    assert await _status(auth, "Bearer sk_other") == (401, "unauthorized")
    assert await _status(auth) == (200, "acme")
    assert await _status(auth, "Bearer  sk_live  ") == (200, "acme")  # surrounding spaces


async def test_a_revoked_key_is_refused_once_the_cache_second_is_over() -> None:
    keys, clock = Keys(), Clock()
    auth = Authenticator(keys, clock=clock)
    assert await _status(auth) == (200, "acme")
    keys.rows[DIGEST]["revoked"] = True
    assert await _status(auth) == (200, "acme")  # within the second: cached
    assert keys.calls == 1
    clock.now += KEY_CACHE_TTL_S
    assert await _status(auth) == (401, "unauthorized")
    # Forgotten: an outage now does not bring the revoked key back.
    keys.down = True
    assert await _status(auth) == (503, "unavailable")


async def test_a_disabled_tenant_gets_403_and_comes_back_when_enabled() -> None:
    keys, clock = Keys(), Clock()
    auth = Authenticator(keys, clock=clock)
    assert await _status(auth) == (200, "acme")
    keys.rows[DIGEST]["enabled"] = False
    clock.now += KEY_CACHE_TTL_S
    assert await _status(auth) == (403, "tenant_disabled")
    keys.rows[DIGEST]["enabled"] = True
    clock.now += KEY_CACHE_TTL_S
    assert await _status(auth) == (200, "acme")


async def test_known_keys_keep_working_while_the_database_is_away() -> None:
    keys, clock = Keys(), Clock()
    auth = Authenticator(keys, clock=clock, outage_hold_s=5.0)
    assert await _status(auth) == (200, "acme")
    keys.down = True
    clock.now += KEY_CACHE_TTL_S
    assert await _status(auth) == (200, "acme")
    assert await _status(auth, "Bearer sk_never_seen") == (503, "unavailable")
    calls = keys.calls
    clock.now += 4.0  # within the hold: no query at all
    assert await _status(auth) == (200, "acme")
    assert keys.calls == calls
    clock.now += 1.0  # the hold is over: asked again, then revocations count again
    keys.down = False
    keys.rows[DIGEST]["revoked"] = True
    assert await _status(auth) == (401, "unauthorized")


async def test_a_database_that_does_not_answer_counts_as_away_for_known_keys() -> None:
    keys, clock = Keys(), Clock()
    auth = Authenticator(keys, clock=clock, stale_timeout_s=0.05)
    assert await _status(auth) == (200, "acme")
    keys.hang = True
    clock.now += KEY_CACHE_TTL_S
    async with asyncio.timeout(2):
        assert await _status(auth) == (200, "acme")


async def test_concurrent_requests_share_one_refresh_per_key() -> None:
    keys, clock = Keys(), Clock()
    auth = Authenticator(keys, clock=clock)
    assert await _status(auth) == (200, "acme")
    clock.now += KEY_CACHE_TTL_S
    results = await asyncio.gather(*(_status(auth) for _ in range(50)))
    assert set(results) == {(200, "acme")}
    assert keys.calls == 2


def test_tenants_command_lines() -> None:
    parse = _parser().parse_args
    legacy = parse(["tenants", "--add", "acme"])
    assert (legacy.add, legacy.credits, legacy.tenants_command) == ("acme", 100_000, None)
    listing = parse(["tenants"])
    assert (listing.add, listing.tenants_command) == (None, None)
    create = parse(["tenants", "create", "acme", "--credits", "5", "--rate", "2.5"])
    assert (create.name, create.grant, create.rate, create.max_jobs) == ("acme", 5, 2.5, None)
    assert parse(["tenants", "set", "acme", "--max-jobs", "default"]).max_jobs is DEFAULT
    credit = parse(["tenants", "credit", "acme", "-40"])  # a negative amount is not an option
    assert (credit.name, credit.amount, credit.correction) == ("acme", -40, False)
    revoke = parse(["tenants", "keys", "revoke", "acme", "k_0123456789ab"])
    assert (revoke.keys_command, revoke.key_id) == ("revoke", "k_0123456789ab")
    with pytest.raises(SystemExit):
        parse(["tenants", "keys"])
    with pytest.raises(SystemExit):
        parse(["tenants", "create", "acme", "--rate", "fast"])
