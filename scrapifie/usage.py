"""``scrapifie usage TENANT``: a tenant's balance and usage, straight from PostgreSQL.

Reads what ``GET /v1/usage`` answers (``connectors.gateway.usage``), with the same parameters: a
window of UTC days (``--from``/``--to``, inclusive; default all time) and a breakdown
(``--group-by`` tier, day or error_code). Exit status: 0 done, 1 no such tenant, 2 bad arguments or
PostgreSQL unreachable or not migrated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from scrapifie.accounts import DB_ERRORS, db_error_message

__all__ = ["add_parser", "render", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``usage`` to the CLI's sub-parsers ``sub``; the ``usage`` parser."""
    from connectors.gateway.usage import GROUP_BY

    s: argparse.ArgumentParser = sub.add_parser(
        "usage",
        help="a tenant's balance and usage (attempts, credits, bytes) from PostgreSQL",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("tenant")
    s.add_argument("--from", dest="start", metavar="YYYY-MM-DD", help="first UTC day (inclusive)")
    s.add_argument("--to", dest="end", metavar="YYYY-MM-DD", help="last UTC day (inclusive)")
    s.add_argument("--group-by", choices=GROUP_BY, help="break usage down")
    s.add_argument("--json", action="store_true", help="print GET /v1/usage's JSON instead")
    return s


def run(dsn: str, args: argparse.Namespace) -> int:
    """Run ``usage`` for ``args`` against the database at ``dsn``; the exit status."""

    from connectors.gateway.usage import UnknownTenant, parse_usage_query

    given = {"from": args.start, "to": args.end, "group_by": args.group_by}
    try:
        query = parse_usage_query({k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        usage = asyncio.run(_read(dsn, args.tenant, *query))
    except UnknownTenant as exc:
        print(f"error: {exc} (see `scrapifie tenants list`)", file=sys.stderr)
        return 1
    except DB_ERRORS as exc:
        print(f"error: {db_error_message(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(usage, indent=2) if args.json else render(usage))
    return 0


async def _read(dsn: str, tenant: str, *query: Any) -> dict[str, Any]:
    import psycopg

    from connectors.gateway.usage import read_usage

    start, end, group_by = query
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        return await read_usage(conn, tenant, start=start, end=end, group_by=group_by)


_COLUMNS = ("attempts", "succeeded", "credits", "bytes")


def render(usage: dict[str, Any]) -> str:
    """``usage`` (``read_usage``'s answer) for people: the balance, then a table."""
    start, end = usage["from"], usage["to"]
    if start and end:
        window = f"{start} to {end} (UTC days)"
    elif start or end:
        window = f"since {start} (UTC)" if start else f"up to {end} (UTC)"
    else:
        window = "all time"
    jobs = usage["open_jobs"]
    lines = [
        f"tenant {usage['tenant']}: {usage['credits_remaining']:,} credits remaining"
        f" (balance {usage['credits_balance']:,}, {usage['credits_reserved']:,} reserved by"
        f" {jobs:,} open job{'' if jobs == 1 else 's'})",
        f"usage, {window}:",
    ]
    group_by = usage["group_by"]
    rows = [(str(r[group_by] or "-"), *(r[c] for c in _COLUMNS)) for r in usage["rows"]]
    total = ("total", *(usage["credits_used" if c == "credits" else c] for c in _COLUMNS))
    label = group_by or ""
    width = max([len(label), len("total"), *(len(r[0]) for r in rows)])
    lines.append(f"  {label:<{width}}" + "".join(f" {c:>12}" for c in _COLUMNS))
    for row in [*rows, total]:
        lines.append(f"  {row[0]:<{width}}" + "".join(f" {v:>12,}" for v in row[1:]))
    return "\n".join(lines)
