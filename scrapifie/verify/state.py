"""What ``scrapifie verify`` read from the backends, as plain data the checks look at."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "Attempt",
    "Balance",
    "Db",
    "Job",
    "JobRow",
    "KafkaState",
    "Meter",
    "OpenReservation",
    "Settlement",
    "TopicScan",
    "VerifyError",
    "Where",
    "fmt",
]

Job = tuple[str, str]  # (tenant, job_id)
Where = tuple[str, int, int]  # (topic, partition, offset)


class VerifyError(Exception):
    """A backend could not be read: nothing can be concluded (exit status 2)."""


# -- Kafka --------------------------------------------------------------------------------------
@dataclass
class Meter:
    tenant: str
    job_id: str
    credits: int
    outcome: str
    where: list[Where] = field(default_factory=list)


@dataclass
class TopicScan:
    """What the topics hold from the cutoff to their end offsets at snapshot time."""

    requests: dict[Job, list[Where]] = field(default_factory=lambda: defaultdict(list))
    results: dict[Job, list[Where]] = field(default_factory=lambda: defaultdict(list))
    metering: dict[str, Meter] = field(default_factory=dict)
    undecodable: list[tuple[Where, str]] = field(default_factory=list)
    dlq: dict[Where, list[str]] = field(default_factory=lambda: defaultdict(list))
    records: Counter[str] = field(default_factory=Counter)


@dataclass
class KafkaState:
    groups: set[str]
    committed: dict[str, dict[tuple[str, int], int]]  # group -> (topic, partition) -> offset
    ends: dict[tuple[str, int], int]
    scan: TopicScan

    def processed(self, group: str | None, where: Where) -> bool:
        """Whether ``group`` had committed past the record at snapshot time."""
        if group is None:
            return False
        topic, partition, offset = where
        return self.committed.get(group, {}).get((topic, partition), -1) > offset

    def lag(self, group: str, topics: Iterable[str]) -> int:
        wanted = set(topics)
        committed = self.committed.get(group, {})
        return sum(
            max(0, end - max(committed.get(tp, 0), 0))
            for tp, end in self.ends.items()
            if tp[0] in wanted
        )


# -- rows -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class JobRow:
    status: str
    tier: str | None
    http_status: int | None
    error_code: str | None
    content_key: str | None
    content_sha256: str | None
    result_event_id: str | None
    finished_at: datetime | None
    created_at: datetime | None
    screenshot_key: str | None
    attempts: int | None = None  # the number of the job's last attempt
    credits: int | None = None  # what it was charged; None before migration 0008

    @classmethod
    def absent(cls) -> JobRow:
        return cls("absent", None, None, None, None, None, None, None, None, None)


@dataclass(frozen=True, slots=True)
class Attempt:
    event_id: str
    tenant: str
    job_id: str
    tier: str
    attempt: int
    outcome: str
    credits: int
    in_window: bool
    error_code: str | None = None
    cache_hit: bool = False


@dataclass(frozen=True, slots=True)
class Balance:
    """A tenant row's balances beside what they should equal, read in one snapshot."""

    credits: int
    reserved: int
    open_jobs: int
    ledger: int  # sum(credit_ledger.delta)
    held: int  # sum(amount) of unreleased reservations
    holding: int  # how many unreleased reservations
    used: int  # sum(usage_daily.credits): what attempts were charged, all time


@dataclass(frozen=True, slots=True)
class Settlement:
    """A final job of the window that was charged (jobs.credits is set) and its charge rows."""

    tenant_known: bool  # SETTLE charges only tenants it knows
    credits: int
    charges: tuple[int, ...]  # credit_ledger.delta of its 'charge' rows


@dataclass(frozen=True, slots=True)
class OpenReservation:
    """An unreleased reservation and the state of its job (None: no row)."""

    amount: int
    created_at: datetime
    status: str | None
    finished_at: datetime | None


@dataclass
class Db:
    cutoff: datetime
    jobs: dict[Job, JobRow] = field(default_factory=dict)
    outside: dict[Job, JobRow] = field(default_factory=dict)  # topic jobs created before cutoff
    attempts: list[Attempt] = field(default_factory=list)
    balances: dict[str, Balance] = field(default_factory=dict)
    settled: dict[Job, Settlement] = field(default_factory=dict)
    # Charge rows since the cutoff whose job is not final: (delta, job status; None: no row).
    stray_charges: dict[Job, tuple[int, str | None]] = field(default_factory=dict)
    open_reservations: dict[Job, OpenReservation] = field(default_factory=dict)

    def row(self, job: Job) -> JobRow | None:
        return self.jobs.get(job) or self.outside.get(job)

    def all_rows(self) -> Iterable[JobRow]:
        yield from self.jobs.values()
        yield from self.outside.values()


def fmt(where: Where) -> str:
    """``topic[partition]@offset``, as the checks' examples name a record."""
    return f"{where[0]}[{where[1]}]@{where[2]}"
