"""A tenant's usage and balance, as ``GET /v1/usage`` and ``scrapifie usage`` answer them.

Usage comes from ``usage_daily`` (one row per tenant, UTC day, tier, attempt outcome and error
code, added to by the ledger sink once per new attempt row), so a query costs one index range
scan whatever the window. The balance comes from the tenant row: ``credits`` is what settled
jobs left, ``reserved`` what jobs not ended yet hold; ``credits - reserved`` may still be spent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any, Final, Literal, NamedTuple, get_args

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from schemas.records import AttemptOutcome
from schemas.topics import TIER_ORDER

__all__ = [
    "GROUP_BY",
    "USAGE_PARAMS",
    "GroupBy",
    "UnknownTenant",
    "UsageQuery",
    "parse_usage_query",
    "read_usage",
]

GroupBy = Literal["tier", "day", "error_code"]
GROUP_BY: Final[tuple[GroupBy, ...]] = get_args(GroupBy)
# The query parameters of GET /v1/usage (and the CLI's options, by the same names).
USAGE_PARAMS: Final = ("from", "to", "group_by")

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")  # date.fromisoformat also takes 20260102, 2026-W01-1
_TIER_RANK = {t.value: i for i, t in enumerate(TIER_ORDER)}


class UnknownTenant(LookupError):
    """No tenant of that name."""


class UsageQuery(NamedTuple):
    """A usage window (inclusive UTC days; None: unbounded) and how to break it down."""

    start: date | None = None
    end: date | None = None
    group_by: GroupBy | None = None


def parse_usage_query(params: Mapping[str, str]) -> UsageQuery:
    """``from``, ``to`` (YYYY-MM-DD, inclusive, UTC) and ``group_by`` (tier, day or
    error_code) from query parameters; all optional (default: all time, no breakdown).
    Raises ``ValueError`` saying what to fix for anything else."""
    unknown = sorted(set(params) - set(USAGE_PARAMS))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)}; usage takes {', '.join(USAGE_PARAMS)}"
        )
    start, end = _date(params, "from"), _date(params, "to")
    if start is not None and end is not None and start > end:
        raise ValueError(f"from ({start}) is after to ({end})")
    group_by = params.get("group_by")
    if group_by is not None and group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}, not {group_by!r}")
    return UsageQuery(start, end, group_by)


def _date(params: Mapping[str, str], name: str) -> date | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        if not _DATE.fullmatch(raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{name} must be a date as YYYY-MM-DD (UTC), not {raw!r}") from None


_BALANCE = "SELECT credits, reserved, open_jobs FROM tenants WHERE tenant_id = %s"
# usage_daily stores '' for "no error code" (it is part of the key); answered as null.
_KEYS: Final[dict[GroupBy, sql.Composable]] = {
    "tier": sql.SQL("tier"),
    "day": sql.SQL("day"),
    "error_code": sql.SQL("nullif(error_code, '')"),
}


async def read_usage(
    conn: AsyncConnection[Any],
    tenant: str,
    *,
    start: date | None = None,
    end: date | None = None,
    group_by: GroupBy | None = None,
) -> dict[str, Any]:
    """The tenant's balance and usage from ``start`` to ``end`` (inclusive UTC days; None:
    unbounded), broken down by ``group_by`` into ``rows`` (none without it), as JSON-ready
    values. Raises :class:`UnknownTenant`; psycopg errors pass through.

    Attempts count every fetch attempt (retries and escalations included); ``credits_used``
    is what those attempts charged, each job's charge being carried by its last attempt."""
    where = [sql.SQL("tenant_id = %(tenant)s")]
    if start is not None:
        where.append(sql.SQL("day >= %(start)s"))
    if end is not None:
        where.append(sql.SQL("day <= %(end)s"))
    key = _KEYS[group_by] if group_by is not None else sql.SQL("NULL")
    query = sql.SQL(
        "SELECT {key} AS key, sum(attempts)::bigint AS attempts,"
        " (sum(attempts) FILTER (WHERE outcome = %(ok)s))::bigint AS succeeded,"
        " sum(credits)::bigint AS credits, sum(bytes)::bigint AS bytes"
        " FROM usage_daily WHERE {where} GROUP BY 1"
    ).format(key=key, where=sql.SQL(" AND ").join(where))
    params = {"tenant": tenant, "start": start, "end": end, "ok": AttemptOutcome.OK.value}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_BALANCE, (tenant,))
        balance = await cur.fetchone()
        if balance is None:
            raise UnknownTenant(f"no tenant {tenant!r}")
        await cur.execute(query, params)
        groups = [
            {
                "key": r["key"].isoformat() if isinstance(r["key"], date) else r["key"],
                **{k: int(r[k] or 0) for k in ("attempts", "succeeded", "credits", "bytes")},
            }
            for r in await cur.fetchall()
        ]
    credits, reserved = int(balance["credits"]), int(balance["reserved"])
    return {
        "tenant": tenant,
        "credits_remaining": credits - reserved,
        "credits_balance": credits,
        "credits_reserved": reserved,
        "open_jobs": int(balance["open_jobs"]),
        "from": None if start is None else start.isoformat(),
        "to": None if end is None else end.isoformat(),
        "group_by": group_by,
        "attempts": sum(g["attempts"] for g in groups),
        "succeeded": sum(g["succeeded"] for g in groups),
        "credits_used": sum(g["credits"] for g in groups),
        "bytes": sum(g["bytes"] for g in groups),
        "rows": [] if group_by is None else _rows(groups, group_by),
    }


def _rows(groups: list[dict[str, Any]], group_by: GroupBy) -> list[dict[str, Any]]:
    """Tiers cheapest first, days in order, error codes most frequent first (none last)."""
    if group_by == "tier":
        groups.sort(key=lambda g: (_TIER_RANK.get(g["key"], len(_TIER_RANK)), g["key"]))
    elif group_by == "day":
        groups.sort(key=lambda g: g["key"])
    else:
        groups.sort(key=lambda g: (g["key"] is None, -g["attempts"], g["key"] or ""))
    return [{group_by: g.pop("key"), **g} for g in groups]
