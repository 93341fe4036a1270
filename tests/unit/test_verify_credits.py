"""``scrapifie verify``'s checks on credits, on hand-made state: a job pays once, in its last
attempt, by the price list (credits); balances agree with the ledger and the reservations
(balances); each final job is settled once (settlements). Each check passes on a coherent
state and breaks on each kind of damage it claims to catch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.prices import Prices
from scrapifie.settings import Settings
from scrapifie.verify.checks import run_checks
from scrapifie.verify.checks.balances import check_balances, check_settlements
from scrapifie.verify.checks.ledger import check_credits
from scrapifie.verify.report import Check
from scrapifie.verify.state import (
    Attempt,
    Balance,
    Db,
    JobRow,
    KafkaState,
    OpenReservation,
    Settlement,
    TopicScan,
)
from scrapifie.verify.topology import Topology

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 2, tzinfo=UTC)
PRICES = Prices(
    tiers={"http": 1, "browser": 5, "stealth": 10}, cache_hit=2, robots_refusal=3, failed=4
)
TOPO = Topology.from_settings(Settings())


def _row(status: str, credits: int | None, attempts: int, tier: str = "http") -> JobRow:
    return JobRow(status, tier, None, None, None, None, "ev", T0, T0, None, attempts, credits)


def _attempt(
    job: str,
    n: int,
    tier: str,
    outcome: str,
    credits: int,
    error_code: str | None = None,
    cache_hit: bool = False,
) -> Attempt:
    return Attempt(
        f"{job}-{n}", "acme", job, tier, n, outcome, credits, True, error_code, cache_hit
    )


def _db(jobs: dict[str, JobRow], attempts: list[Attempt]) -> Db:
    db = Db(T0)
    db.jobs = {("acme", j): r for j, r in jobs.items()}
    db.attempts = attempts
    return db


def _healthy() -> Db:
    return _db(
        {
            # retried once, then escalated, then fetched by the browser tier
            "esc": _row("succeeded", 5, 3, "browser"),
            "cache": _row("succeeded", 2, 1),
            "robots": _row("failed", 3, 1),
            "timeout": _row("failed", 4, 2),
        },
        [
            _attempt("esc", 1, "http", "transient", 0, "timeout"),
            _attempt("esc", 2, "http", "blocked", 0, "blocked"),
            _attempt("esc", 3, "browser", "ok", 5),
            _attempt("cache", 1, "http", "ok", 2, cache_hit=True),
            _attempt("robots", 1, "http", "fatal", 3, "robots_disallowed"),
            _attempt("timeout", 1, "http", "transient", 0, "timeout"),
            _attempt("timeout", 2, "http", "transient", 4, "timeout"),
        ],
    )


def _broken(check: Check) -> str:
    return " | ".join(check.examples.get("broken", []))


def test_credits_pass_when_each_job_pays_once_in_its_last_attempt() -> None:
    check = check_credits(PRICES, _healthy(), metering_lag=0)
    assert (check.status, check.checked) == ("ok", 4), check.examples


@pytest.mark.parametrize(
    ("job", "n", "credits", "needle"),
    [
        ("esc", 1, 1, "#1 http, transient) charged 1"),  # a retried attempt charged
        ("esc", 3, 1, "1 credits, expected 5"),  # success at the wrong tier's price
        ("cache", 1, 1, "1 credits, expected 2"),  # a cache hit at the tier's price
        ("robots", 1, 4, "4 credits, expected 3"),  # a robots refusal at the failure price
        ("timeout", 2, 0, "0 credits, expected 4"),  # a final failure left free
    ],
)
def test_credits_break_on_a_wrong_attempt_charge(
    job: str, n: int, credits: int, needle: str
) -> None:
    db = _healthy()
    db.attempts = [
        Attempt(
            a.event_id,
            a.tenant,
            a.job_id,
            a.tier,
            a.attempt,
            a.outcome,
            credits,
            a.in_window,
            a.error_code,
            a.cache_hit,
        )
        if (a.job_id, a.attempt) == (job, n)
        else a
        for a in db.attempts
    ]
    check = check_credits(PRICES, db, metering_lag=0)
    assert check.status == "broken" and needle in _broken(check), check.examples


def test_credits_break_when_the_job_row_disagrees_or_an_attempt_is_doubled() -> None:
    db = _healthy()
    db.jobs[("acme", "cache")] = _row("succeeded", 1, 1)  # settled 1, metered 2
    db.attempts.append(_attempt("robots", 1, "http", "fatal", 3, "robots_disallowed"))
    check = check_credits(PRICES, db, metering_lag=0)
    assert check.broken == 2, check.examples
    assert "its attempts charged 2, the job was charged 1" in _broken(check)
    assert "its attempts charged 6, the job was charged 3" in _broken(check)


def test_credits_wait_for_a_last_attempt_not_metered_yet_and_skip_old_rows() -> None:
    db = _healthy()
    db.attempts = [a for a in db.attempts if (a.job_id, a.attempt) != ("esc", 3)]
    db.jobs[("acme", "old")] = _row("succeeded", None, 1)  # before 0008: no jobs.credits
    db.attempts.append(_attempt("old", 1, "http", "ok", 7))
    waiting = check_credits(PRICES, db, metering_lag=3)
    assert (waiting.status, waiting.pending, waiting.checked) == ("pending", 1, 4)
    assert "last attempt #3 not metered yet" in waiting.examples["pending"][0]
    caught_up = check_credits(PRICES, db, metering_lag=0)
    assert "its last attempt #3 has no row" in _broken(caught_up)


def test_credits_of_jobs_still_running_may_be_zero_or_a_last_price() -> None:
    db = _db(
        {"run": _row("running", None, 0)},
        [
            _attempt("run", 1, "http", "transient", 0, "timeout"),
            _attempt("run", 2, "http", "transient", 4, "timeout"),  # may turn out to be the last
        ],
    )
    assert check_credits(PRICES, db, 0).status == "ok"
    db.attempts.append(_attempt("run", 3, "http", "transient", 1, "timeout"))
    db.attempts.append(_attempt("run2", 1, "http", "ok", 0))  # a success is never free here
    check = check_credits(PRICES, db, 0)
    assert check.broken == 2
    assert "1 credits, expected 0 or 4" in _broken(check)
    assert "0 credits, expected 1" in _broken(check)


# -- balances and settlements -------------------------------------------------------------------
def _money() -> Db:
    db = Db(T0)
    db.balances = {
        "acme": Balance(credits=90, reserved=6, open_jobs=2, ledger=90, held=6, holding=2, used=10),
        "empty": Balance(0, 0, 0, 0, 0, 0, 0),
    }
    db.settled = {
        ("acme", "paid"): Settlement(True, 10, (-10,)),
        ("acme", "free"): Settlement(True, 0, ()),
        ("ghost", "unknown-tenant"): Settlement(False, 5, ()),  # SETTLE charges known tenants
    }
    db.open_reservations = {
        ("acme", "running"): OpenReservation(5, T0, "running", None),
        ("acme", "unseen"): OpenReservation(1, T0, None, None),  # accepted, no row yet
    }
    return db


def _kafka(committed: int = 0) -> KafkaState:
    scan = TopicScan()
    scan.results[("acme", "running")].append((TOPO.results_topic, 0, 7))
    return KafkaState(
        groups={TOPO.results_group},
        committed={TOPO.results_group: {(TOPO.results_topic, 0): committed}},
        ends={(TOPO.results_topic, 0): 8},
        scan=scan,
    )


def test_balances_and_settlements_pass_on_a_coherent_state() -> None:
    db = _money()
    balances = check_balances(db)
    assert (balances.status, balances.checked) == ("ok", 2)
    # The running job's result is on the topic, not yet written: pending, not broken.
    settlements = check_settlements(TOPO, _kafka(committed=0), db)
    assert (settlements.status, settlements.checked) == ("pending", 5), settlements.examples
    assert "not written yet" in settlements.examples["pending"][0]


@pytest.mark.parametrize(
    ("balance", "needle"),
    [
        (Balance(95, 6, 2, 90, 6, 2, 10), "credits 95, but its credit_ledger sums to 90 (+5"),
        (Balance(90, 5, 2, 90, 6, 2, 10), "reserved 5, but unreleased reservations hold 6"),
        (Balance(90, 6, 1, 90, 6, 2, 10), "open_jobs 1, but 2 reservations are unreleased"),
    ],
)
def test_balances_break_on_each_mismatch(balance: Balance, needle: str) -> None:
    db = _money()
    db.balances["acme"] = balance
    check = check_balances(db)
    assert check.broken == 1 and needle in _broken(check), check.examples


def test_settlements_break_on_charges_and_held_reservations() -> None:
    db = _money()
    db.settled[("acme", "twice")] = Settlement(True, 10, (-10, -10))
    db.settled[("acme", "unpaid")] = Settlement(True, 10, ())
    db.settled[("acme", "wrong")] = Settlement(True, 10, (-1,))
    db.settled[("acme", "free-but-charged")] = Settlement(True, 0, (-1,))
    db.stray_charges[("acme", "queued")] = (-3, "queued")
    db.stray_charges[("acme", "nowhere")] = (-3, None)
    db.open_reservations[("acme", "ended")] = OpenReservation(4, T0, "succeeded", T0)
    check = check_settlements(TOPO, _kafka(committed=8), db)  # the result was consumed
    text = _broken(check)
    assert check.broken == 8, check.examples
    for needle in (
        "acme/twice: charged 10 credits, but its 'charge' rows are [-10, -10]",
        "acme/unpaid: charged 10 credits, but its 'charge' rows are [] (expected [-10])",
        "acme/wrong: charged 10",
        "acme/free-but-charged: charged 0 credits, but its 'charge' rows are [-1] (expected [])",
        "acme/queued: a 'charge' row of -3 for a job still queued",
        "acme/nowhere: a 'charge' row of -3 for a job without a row",
        "acme/ended: 4 credits reserved at 2026-01-02T00:00:00+00:00 still held, though the"
        " job succeeded",
        "acme/running: 5 credits reserved",
    ):
        assert needle in text, (needle, text)
    assert "was consumed" in text


def test_run_checks_reports_the_new_checks_in_order() -> None:
    db = _healthy()
    names = [c.name for c in run_checks(TOPO, PRICES, _kafka(), db, {}, {}, T0)]
    i = names.index("credits")
    assert names[i : i + 3] == ["credits", "balances", "settlements"]
