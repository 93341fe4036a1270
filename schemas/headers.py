"""Kafka headers carried by every record (ids and trace id travel outside the body too)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

TRACE_ID = "trace_id"
JOB_ID = "job_id"
TENANT = "tenant"
EVENT_ID = "event_id"
# On scrape.dlq:
DLQ_REASON = "dlq.reason"
DLQ_DETAIL = "dlq.detail"
DLQ_TOPIC = "dlq.topic"
DLQ_PARTITION = "dlq.partition"
DLQ_OFFSET = "dlq.offset"

Headers = list[tuple[str, bytes]]


def make(**values: str | None) -> Headers:
    """Headers from keyword values, skipping None. A value that is not valid Unicode (an
    exception text quoting what a site sent, say) is encoded with replacement, never raises."""
    return [(k, v.encode("utf-8", "replace")) for k, v in values.items() if v is not None]


def get(
    headers: Iterable[tuple[str, bytes]] | Sequence[tuple[str, bytes]] | None, name: str
) -> str | None:
    for k, v in headers or ():
        if k == name:
            return v.decode("utf-8", "replace")
    return None


def dlq(
    original: Iterable[tuple[str, bytes]] | None,
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
) -> Headers:
    """Headers of a DLQ record: the original headers plus where it came from and why."""
    return [
        *(original or ()),
        *make(
            **{
                DLQ_REASON: reason,
                DLQ_DETAIL: detail[:1000],
                DLQ_TOPIC: topic,
                DLQ_PARTITION: str(partition),
                DLQ_OFFSET: str(offset),
            }
        ),
    ]
