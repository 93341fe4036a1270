"""``scrapifie tenants``: accounts, their API keys and credits, straight in PostgreSQL.

A new key is printed once, alone on stdout (``KEY=$(scrapifie tenants keys add acme)``); what
else a command has to say goes to stderr, except the listings of ``list`` and ``show``. Exit
status: 0 done, 1 refused (the message says why), 2 PostgreSQL unreachable or not migrated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from scrapifie.accounts import DB_ERRORS, db_error_message

__all__ = ["add_parser", "run"]

_LEGACY_CREDITS = 100_000


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``tenants`` and its commands to the CLI's sub-parsers ``sub``; the ``tenants`` parser."""
    s: argparse.ArgumentParser = sub.add_parser(
        "tenants",
        help="tenants, their API keys and credits (no command: list them)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The original interface, kept: `tenants --add NAME [--credits N] [--api-key K]`.
    s.add_argument("--add", metavar="NAME", help="create NAME if missing and print a new key")
    s.add_argument("--credits", type=int, default=_LEGACY_CREDITS, metavar="N", help="with --add")
    s.add_argument("--api-key", help="with --add: use this key instead of a random one")
    s.set_defaults(tenants_command=None)
    cmd = s.add_subparsers(dest="tenants_command", metavar="COMMAND")

    c = cmd.add_parser("create", help="create a tenant and print its first API key")
    c.add_argument("name")
    c.add_argument(
        "--credits", dest="grant", type=int, default=0, metavar="N", help="starting credits"
    )
    _settings_args(c)
    c.add_argument("--label", default="first key", help="the first key's label")

    c = cmd.add_parser("list", help="every tenant, its balance and settings")
    c.add_argument("--json", action="store_true")

    c = cmd.add_parser("show", help="a tenant: balance, ledger sum, settings and keys")
    c.add_argument("name")
    c.add_argument("--json", action="store_true")

    c = cmd.add_parser("credit", help="add N credits (negative: take away, not below 0)")
    c.add_argument("name")
    c.add_argument("amount", type=int, metavar="N")
    c.add_argument("--correction", action="store_true", help="record a positive N as a correction")

    c = cmd.add_parser("set", help="change a tenant's rate or concurrent jobs limit")
    c.add_argument("name")
    _settings_args(c)

    for name, what in (("disable", "refuse its keys (403)"), ("enable", "accept its keys again")):
        c = cmd.add_parser(name, help=f"{what}")
        c.add_argument("name")

    c = cmd.add_parser("keys", help="add or revoke a tenant's API keys")
    keys = c.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    k = keys.add_parser("add", help="a new key for the tenant, printed once (others stay valid)")
    k.add_argument("name")
    k.add_argument("--label", help="what the key is for (shown by `tenants show`)")
    k = keys.add_parser("revoke", help="refuse a key from now on (within a second)")
    k.add_argument("name")
    k.add_argument("key_id", help="the key's id (k_...), from `tenants show`")
    return s


def _settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rate", type=_or_default(float), help="requests per second ('default': the deployment's)"
    )
    p.add_argument(
        "--max-jobs", type=_or_default(int), help="jobs at once ('default': the deployment's)"
    )


class _Default:
    """``--rate default``: back to the deployment's default (stored as NULL)."""


DEFAULT = _Default()


def _or_default(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        return DEFAULT if value == "default" else kind(value)

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def run(dsn: str, args: argparse.Namespace) -> int:
    """Run the ``tenants`` command ``args`` against the database at ``dsn``; the exit status."""

    from scrapifie.accounts import AccountError

    if args.add and args.tenants_command:
        print("error: --add is the old form of `tenants create`; use one", file=sys.stderr)
        return 1
    name = args.tenants_command or "list"
    if name == "keys":
        name = f"keys {args.keys_command}"
    try:
        if args.add:
            return asyncio.run(_add(dsn, args))
        return asyncio.run(_in_transaction(dsn, _COMMANDS[name], args))
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except DB_ERRORS as exc:
        print(f"error: {db_error_message(exc)}", file=sys.stderr)
        return 2


Command = Callable[[Any, argparse.Namespace], Awaitable[int]]


async def _in_transaction(dsn: str, command: Command, args: argparse.Namespace) -> int:
    import psycopg

    # One transaction: committed when the block ends, rolled back if the command raises.
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return await command(conn, args)


def _note(text: str) -> None:
    print(text, file=sys.stderr)


async def _add(dsn: str, args: argparse.Namespace) -> int:
    from scrapifie.admin import add_tenant

    key = await add_tenant(dsn, args.add, args.credits, args.api_key)
    print(f"tenant {args.add}: API key {key}  (shown once; only its hash is stored)")
    return 0


async def _create(conn: Any, args: argparse.Namespace) -> int:
    from scrapifie import accounts

    rate, max_jobs = _settings(args)
    if not await accounts.create_tenant(conn, args.name, args.grant, rate, max_jobs):
        raise accounts.AlreadyExists(
            f"tenant {args.name!r} exists; add a key with `scrapifie tenants keys add {args.name}`"
        )
    key_id, key = await accounts.add_key(conn, args.name, args.label)
    _note(
        f"tenant {args.name} created with {args.grant} credits; its API key {key_id} follows"
        " (shown once: only its hash is stored)"
    )
    print(key)
    return 0


async def _list(conn: Any, args: argparse.Namespace) -> int:
    from scrapifie import accounts

    rows = await accounts.tenants(conn)
    if getattr(args, "json", False):
        print(json.dumps([t.to_json() for t in rows], indent=2))
        return 0
    width = max([6, *(len(t.tenant_id) for t in rows)])
    print(f"{'TENANT':{width}}  ENABLED  {'CREDITS':>14}  {'RATE/S':>8}  {'MAX_JOBS':>8}  KEYS")
    for t in rows:
        print(
            f"{t.tenant_id:{width}}  {_yes(t.enabled):7}  {t.credits:>14}"
            f"  {_setting(t.rate_per_s):>8}  {_setting(t.max_jobs):>8}  {t.active_keys:>4}"
        )
    return 0


async def _show(conn: Any, args: argparse.Namespace) -> int:
    from scrapifie import accounts

    t = await accounts.get_tenant(conn, args.name)
    if args.json:
        print(json.dumps(t.to_json(), indent=2))
        return 0
    print(f"tenant      {t.tenant_id}")
    print(f"enabled     {_yes(t.enabled)}")
    print(f"credits     {t.credits}  (ledger sum {t.ledger_sum})")
    print(f"rate_per_s  {_setting(t.rate_per_s)}")
    print(f"max_jobs    {_setting(t.max_jobs)}")
    print(f"created_at  {t.created_at.isoformat(timespec='seconds')}")
    print(f"keys        {t.active_keys} active")
    for k in t.keys:
        state = (
            "active"
            if k.revoked_at is None
            else f"revoked {k.revoked_at.isoformat('T', 'seconds')}"
        )
        print(
            f"  {k.key_id}  created {k.created_at.isoformat(timespec='seconds')}  {state}"
            + (f"  {k.label}" if k.label else "")
        )
    return 0


async def _credit(conn: Any, args: argparse.Namespace) -> int:
    from scrapifie import accounts
    from scrapifie.accounts import CreditReason

    reason: CreditReason = "correction" if args.correction or args.amount < 0 else "topup"
    balance = await accounts.credit(conn, args.name, args.amount, reason)
    _note(f"tenant {args.name}: {args.amount:+d} credits ({reason}); balance {balance}")
    return 0


async def _set(conn: Any, args: argparse.Namespace) -> int:
    from scrapifie import accounts

    changes: dict[str, Any] = {}
    if args.rate is not None:
        changes["rate_per_s"] = None if args.rate is DEFAULT else args.rate
    if args.max_jobs is not None:
        changes["max_jobs"] = None if args.max_jobs is DEFAULT else args.max_jobs
    if not changes:
        raise accounts.AccountError("nothing to change: give --rate and/or --max-jobs")
    await accounts.update_settings(conn, args.name, **changes)
    _note(f"tenant {args.name}: " + ", ".join(f"{k} {_setting(v)}" for k, v in changes.items()))
    return 0


async def _enable(conn: Any, args: argparse.Namespace) -> int:
    from scrapifie import accounts

    enabled = args.tenants_command == "enable"
    await accounts.set_enabled(conn, args.name, enabled)
    _note(f"tenant {args.name} {'enabled' if enabled else 'disabled'}")
    return 0


async def _keys_add(conn: Any, args: argparse.Namespace) -> int:
    from scrapifie import accounts

    key_id, key = await accounts.add_key(conn, args.name, args.label)
    _note(f"tenant {args.name}: new API key {key_id} follows (shown once: only its hash is stored)")
    print(key)
    return 0


async def _keys_revoke(conn: Any, args: argparse.Namespace) -> int:
    from scrapifie import accounts

    now = await accounts.revoke_key(conn, args.name, args.key_id)
    _note(f"tenant {args.name}: key {args.key_id} " + ("revoked" if now else "was already revoked"))
    return 0


def _settings(args: argparse.Namespace) -> tuple[float | None, int | None]:
    rate = None if args.rate in (None, DEFAULT) else args.rate
    max_jobs = None if args.max_jobs in (None, DEFAULT) else args.max_jobs
    return rate, max_jobs


def _setting(value: object) -> str:
    return "default" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


_COMMANDS: dict[str, Command] = {
    "create": _create,
    "list": _list,
    "show": _show,
    "credit": _credit,
    "set": _set,
    "disable": _enable,
    "enable": _enable,
    "keys add": _keys_add,
    "keys revoke": _keys_revoke,
}
