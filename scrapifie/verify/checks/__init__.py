"""The invariants ``scrapifie verify`` checks, one module per group (see the package docstring
of :mod:`scrapifie.verify` for what breaks each)."""

from __future__ import annotations

from datetime import datetime

from schemas.prices import Prices
from scrapifie.verify.checks.balances import check_balances, check_settlements
from scrapifie.verify.checks.dlq import check_dlq
from scrapifie.verify.checks.jobs import check_final, check_rows_consistent, check_rows_exist
from scrapifie.verify.checks.ledger import check_credits, check_duplicate_attempts, check_metering
from scrapifie.verify.checks.objects import (
    check_extra_objects,
    check_integrity,
    check_missing_objects,
)
from scrapifie.verify.report import Check
from scrapifie.verify.state import Db, Job, JobRow, KafkaState
from scrapifie.verify.topology import Topology

__all__ = ["check_integrity", "run_checks"]


def run_checks(
    topo: Topology,
    prices: Prices,
    kafka: KafkaState,
    db: Db,
    objects: dict[str, datetime],
    owners: dict[Job, JobRow],
    started: datetime,
) -> list[Check]:
    """Every check on what was read, in report order, but content_integrity (it reads the
    object store: :func:`check_integrity`)."""
    results_lag = kafka.lag(topo.results_group, [topo.results_topic])
    metering_lag = kafka.lag(topo.ledger_group, [topo.metering_topic])
    return [
        check_rows_exist(topo, kafka, db),
        check_final(topo, kafka, db),
        check_rows_consistent(db),
        check_duplicate_attempts(db),
        check_metering(topo, kafka, db),
        check_credits(prices, db, metering_lag),
        check_balances(db),
        check_settlements(topo, kafka, db),
        check_missing_objects(db, objects),
        check_extra_objects(db, objects, owners, results_lag, started),
        check_dlq(topo, kafka),
    ]
