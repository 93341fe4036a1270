"""Tenants, their API keys and credits in PostgreSQL (tables of migration 0007_accounts.sql).

Each function takes an open connection and leaves committing to the caller (psycopg commits
when the connection's ``async with`` block ends without an error), so that a balance and its
``credit_ledger`` row change together. Keys are stored as their SHA-256 only; a key's public
name is its ``key_id``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

__all__ = [
    "DB_ERRORS",
    "AccountError",
    "AlreadyExists",
    "ApiKey",
    "BalanceTooLow",
    "CreditReason",
    "NotFound",
    "Tenant",
    "add_key",
    "create_tenant",
    "credit",
    "db_error_message",
    "get_tenant",
    "hash_key",
    "new_key",
    "revoke_key",
    "set_enabled",
    "tenants",
    "update_settings",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
Conn = psycopg.AsyncConnection[Any]
CreditReason = Literal["grant", "topup", "correction"]


class AccountError(Exception):
    """A refused account operation; the message says why (the CLI prints it, exit 1)."""


class NotFound(AccountError):
    pass


class AlreadyExists(AccountError):
    pass


class BalanceTooLow(AccountError):
    pass


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    enabled: bool
    credits: int
    rate_per_s: float | None  # None: the deployment's default
    max_jobs: int | None  # None: the deployment's default
    created_at: datetime
    active_keys: int
    ledger_sum: int
    keys: list[ApiKey] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k in [out, *out["keys"]]:
            for name in ("created_at", "revoked_at"):
                if isinstance(k.get(name), datetime):
                    k[name] = k[name].isoformat()
        return out


# What a command reading or writing accounts may meet in the database: not migrated, or away.
DB_ERRORS = (
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.OperationalError,
)


def db_error_message(exc: Exception) -> str:
    """What to tell a person about one of :data:`DB_ERRORS`."""
    if isinstance(exc, psycopg.OperationalError):
        return f"cannot reach PostgreSQL ({exc})"
    return f"the database is not migrated ({exc}); run `scrapifie migrate`"


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_key() -> str:
    return f"sk_{secrets.token_urlsafe(24)}"


async def create_tenant(
    conn: Conn,
    tenant: str,
    credits: int = 0,
    rate_per_s: float | None = None,
    max_jobs: int | None = None,
) -> bool:
    """Create ``tenant`` with ``credits`` (a 'grant' in the ledger); False if it exists (it is
    then left as it is)."""
    _check_name(tenant)
    if credits < 0:
        raise AccountError("credits must be 0 or more")
    if rate_per_s is not None and not rate_per_s > 0:
        raise AccountError("rate must be a number above 0")
    if max_jobs is not None and max_jobs < 1:
        raise AccountError("max jobs must be 1 or more")
    cur = await conn.execute(
        "INSERT INTO tenants (tenant_id, credits, rate_per_s, max_jobs) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (tenant_id) DO NOTHING RETURNING tenant_id",
        (tenant, credits, rate_per_s, max_jobs),
    )
    if await cur.fetchone() is None:
        return False
    if credits:
        await conn.execute(
            "INSERT INTO credit_ledger (tenant_id, delta, reason) VALUES (%s, %s, 'grant')",
            (tenant, credits),
        )
    return True


async def add_key(
    conn: Conn, tenant: str, label: str | None = None, api_key: str | None = None
) -> tuple[str, str]:
    """A new key for ``tenant``: ``(key_id, key)``. With ``api_key`` given and already this
    tenant's (not revoked), that key's id is returned and nothing changes."""
    await _lock_tenant(conn, tenant)
    key = api_key or new_key()
    key_id = f"k_{secrets.token_hex(6)}"
    cur = await conn.execute(
        "INSERT INTO api_keys (key_id, tenant_id, key_sha256, label) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (key_sha256) DO NOTHING RETURNING key_id",
        (key_id, tenant, hash_key(key), label),
    )
    if await cur.fetchone() is None:
        cur = await conn.execute(
            "SELECT key_id FROM api_keys WHERE key_sha256 = %s AND tenant_id = %s"
            " AND revoked_at IS NULL",
            (hash_key(key), tenant),
        )
        row = await cur.fetchone()
        if row is None:
            raise AlreadyExists("that key is taken (another tenant's, or revoked); choose another")
        key_id = row[0]
    return key_id, key


async def revoke_key(conn: Conn, tenant: str, key_id: str) -> bool:
    """Revoke ``tenant``'s key ``key_id``; False if it already was."""
    cur = await conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
        " WHERE tenant_id = %s AND key_id = %s RETURNING revoked_at = now()",
        (tenant, key_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"tenant {tenant!r} has no key {key_id!r} (see `tenants show {tenant}`)")
    return bool(row[0])


async def credit(conn: Conn, tenant: str, delta: int, reason: CreditReason | None = None) -> int:
    """Add ``delta`` credits (negative: take away) and write the ledger row; the new balance.

    ``reason`` defaults to 'topup' for a positive delta, 'correction' for a negative one. A
    negative delta may not take the balance below 0.
    """
    reason = reason or ("topup" if delta > 0 else "correction")
    if delta == 0:
        raise AccountError("the amount must not be 0")
    if delta < 0 and reason != "correction":
        raise AccountError(f"a {reason} must be positive; take credits away with a correction")
    balance = await _lock_tenant(conn, tenant)
    if delta < 0 and balance + delta < 0:
        raise BalanceTooLow(
            f"tenant {tenant!r} has {balance} credits: taking {-delta} would go below 0"
        )
    cur = await conn.execute(
        "UPDATE tenants SET credits = credits + %s WHERE tenant_id = %s RETURNING credits",
        (delta, tenant),
    )
    row = await cur.fetchone()
    assert row is not None  # locked above
    await conn.execute(
        "INSERT INTO credit_ledger (tenant_id, delta, reason) VALUES (%s, %s, %s)",
        (tenant, delta, reason),
    )
    return int(row[0])


async def set_enabled(conn: Conn, tenant: str, enabled: bool) -> None:
    cur = await conn.execute(
        "UPDATE tenants SET enabled = %s WHERE tenant_id = %s RETURNING 1", (enabled, tenant)
    )
    if await cur.fetchone() is None:
        raise NotFound(f"no tenant {tenant!r}")


_UNSET: Any = object()


async def update_settings(
    conn: Conn, tenant: str, rate_per_s: float | None = _UNSET, max_jobs: int | None = _UNSET
) -> None:
    """Change the settings passed (None: back to the deployment's default)."""
    if rate_per_s is not _UNSET and rate_per_s is not None and not rate_per_s > 0:
        raise AccountError("rate must be a number above 0")
    if max_jobs is not _UNSET and max_jobs is not None and max_jobs < 1:
        raise AccountError("max jobs must be 1 or more")
    await _lock_tenant(conn, tenant)
    if rate_per_s is not _UNSET:
        await conn.execute(
            "UPDATE tenants SET rate_per_s = %s WHERE tenant_id = %s", (rate_per_s, tenant)
        )
    if max_jobs is not _UNSET:
        await conn.execute(
            "UPDATE tenants SET max_jobs = %s WHERE tenant_id = %s", (max_jobs, tenant)
        )


_TENANTS_SQL = """
SELECT t.tenant_id, t.enabled, t.credits, t.rate_per_s, t.max_jobs, t.created_at,
       (SELECT count(*) FROM api_keys k
         WHERE k.tenant_id = t.tenant_id AND k.revoked_at IS NULL) AS active_keys,
       (SELECT coalesce(sum(l.delta), 0) FROM credit_ledger l
         WHERE l.tenant_id = t.tenant_id) AS ledger_sum
FROM tenants t
"""


async def tenants(conn: Conn) -> list[Tenant]:
    """Every tenant, by name, without its keys."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_TENANTS_SQL + " ORDER BY t.tenant_id")
    return [_tenant(r) for r in await cur.fetchall()]


async def get_tenant(conn: Conn, tenant: str) -> Tenant:
    """``tenant`` with its keys, oldest first."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_TENANTS_SQL + " WHERE t.tenant_id = %s", (tenant,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no tenant {tenant!r}")
    await cur.execute(
        "SELECT key_id, label, created_at, revoked_at FROM api_keys WHERE tenant_id = %s"
        " ORDER BY created_at, key_id",
        (tenant,),
    )
    keys = [ApiKey(**k) for k in await cur.fetchall()]
    return _tenant(row, keys)


def _tenant(row: dict[str, Any], keys: list[ApiKey] | None = None) -> Tenant:
    return Tenant(
        tenant_id=row["tenant_id"],
        enabled=bool(row["enabled"]),
        credits=int(row["credits"]),
        rate_per_s=None if row["rate_per_s"] is None else float(row["rate_per_s"]),
        max_jobs=row["max_jobs"],
        created_at=row["created_at"],
        active_keys=int(row["active_keys"]),
        ledger_sum=int(row["ledger_sum"]),
        keys=keys or [],
    )


async def _lock_tenant(conn: Conn, tenant: str) -> int:
    """Lock ``tenant``'s row for this transaction; its balance (NotFound if no such tenant)."""
    cur = await conn.execute(
        "SELECT credits FROM tenants WHERE tenant_id = %s FOR UPDATE", (tenant,)
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no tenant {tenant!r} (create it with `scrapifie tenants create`)")
    return int(row[0])


def _check_name(tenant: str) -> None:
    # Tenant names travel in Kafka headers, object keys (paths) and log lines.
    if not _NAME.fullmatch(tenant):
        raise AccountError(
            f"bad tenant name {tenant!r:.80}: 1-64 ASCII letters, digits, '-', '_', '.',"
            " starting with a letter or digit"
        )
