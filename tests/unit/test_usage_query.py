"""``GET /v1/usage``'s and ``scrapifie usage``'s parameters (connectors/gateway/usage.py): what is
accepted, and that everything else is refused with a message saying what to fix; the CLI's
table and its parsing."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from connectors.gateway.usage import UsageQuery, parse_usage_query
from scrapifie.cli import _parser
from scrapifie.usage import render

pytestmark = pytest.mark.unit


def test_defaults_are_all_time_without_breakdown() -> None:
    assert parse_usage_query({}) == UsageQuery(None, None, None)
    start, end, group_by = parse_usage_query({})  # unpacks as (start, end, group_by)
    assert (start, end, group_by) == (None, None, None)


@pytest.mark.parametrize("group_by", ["tier", "day", "error_code"])
def test_a_window_and_each_breakdown(group_by: str) -> None:
    q = parse_usage_query({"from": "2026-01-01", "to": "2026-01-31", "group_by": group_by})
    assert q == UsageQuery(date(2026, 1, 1), date(2026, 1, 31), group_by)  # type: ignore[arg-type]


def test_a_single_day_and_open_ends() -> None:
    day = date(2026, 2, 28)
    assert parse_usage_query({"from": "2026-02-28", "to": "2026-02-28"}) == (day, day, None)
    assert parse_usage_query({"to": "2026-02-28"}) == (None, day, None)
    assert parse_usage_query({"from": "2026-02-28"}) == (day, None, None)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2026-02-30"}, "from must be a date as YYYY-MM-DD"),
        ({"from": "20260102"}, "from must be a date as YYYY-MM-DD"),  # fromisoformat takes it
        ({"to": "2026-W01-1"}, "to must be a date as YYYY-MM-DD"),
        ({"to": "yesterday"}, "to must be a date as YYYY-MM-DD"),
        ({"to": ""}, "to must be a date"),
        ({"from": "2026-01-02T00:00:00"}, "from must be a date"),
        ({"from": "2026-03-01", "to": "2026-02-01"}, "from (2026-03-01) is after to (2026-02-01)"),
        ({"group_by": "month"}, "group_by must be one of tier, day, error_code, not 'month'"),
        ({"group_by": ""}, "group_by must be one of"),
        ({"start": "2026-01-01"}, "unknown parameter(s) start; usage takes from, to, group_by"),
    ],
)
def test_bad_parameters_say_what_to_fix(params: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_usage_query(params)
    assert message in str(err.value)


def _usage(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tenant": "acme",
        "credits_remaining": 9_940,
        "credits_balance": 9_950,
        "credits_reserved": 10,
        "open_jobs": 2,
        "from": None,
        "to": None,
        "group_by": None,
        "attempts": 12,
        "succeeded": 9,
        "credits_used": 50,
        "bytes": 123_456,
        "rows": [],
    }
    return {**base, **overrides}


def test_render_totals_and_a_breakdown() -> None:
    plain = render(_usage())
    assert "tenant acme: 9,940 credits remaining (balance 9,950, 10 reserved by 2 open jobs)" in (
        plain
    )
    assert "usage, all time:" in plain
    assert plain.splitlines()[-1].split() == ["total", "12", "9", "50", "123,456"]
    rows = [
        {"error_code": "timeout", "attempts": 3, "succeeded": 0, "credits": 0, "bytes": 0},
        {"error_code": None, "attempts": 9, "succeeded": 9, "credits": 50, "bytes": 123_456},
    ]
    table = render(_usage(group_by="error_code", rows=rows, **{"from": "2026-01-01"}))
    lines = table.splitlines()
    assert "usage, since 2026-01-01 (UTC):" in table
    assert lines[2].split() == ["error_code", "attempts", "succeeded", "credits", "bytes"]
    assert lines[3].split() == ["timeout", "3", "0", "0", "0"]
    assert lines[4].split() == ["-", "9", "9", "50", "123,456"]  # no error code


def test_cli_parses_usage() -> None:
    args = _parser().parse_args(
        ["usage", "acme", "--from", "2026-01-01", "--to", "2026-01-31", "--group-by", "day"]
    )
    assert (args.tenant, args.start, args.end, args.group_by, args.json) == (
        "acme",
        "2026-01-01",
        "2026-01-31",
        "day",
        False,
    )
    with pytest.raises(SystemExit):
        _parser().parse_args(["usage", "acme", "--group-by", "month"])


def test_cli_refuses_a_bad_date_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    from scrapifie.usage import run

    args = _parser().parse_args(["usage", "acme", "--from", "2026-13-01"])
    assert run("postgresql://nobody@127.0.0.1:1/none", args) == 2
    assert "from must be a date as YYYY-MM-DD" in capsys.readouterr().err
