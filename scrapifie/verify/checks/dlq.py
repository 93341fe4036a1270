"""Check on the dead-letter queue: each undecodable input record is dead-lettered once."""

from __future__ import annotations

from scrapifie.verify.report import Check
from scrapifie.verify.state import KafkaState, fmt
from scrapifie.verify.topology import Topology

__all__ = ["check_dlq"]


def check_dlq(topo: Topology, kafka: KafkaState) -> Check:
    check = Check(
        "dlq",
        "every undecodable record on a consumed input topic has exactly one DLQ record",
    )
    for where, reason in kafka.scan.undecodable:
        group = topo.dlq_owner.get(where[0])
        if where[0] in topo.delay_topics:
            continue  # forwarded to the tier topic as it is; its copy there is checked
        check.checked += 1
        label = f"{fmt(where)} ({reason})"
        copies = len(kafka.scan.dlq.get(where, []))
        if copies == 1:
            continue
        if copies > 1:
            check.warn(f"{label}: {copies} DLQ records (a replay after a crash)")
        elif group is None or group not in kafka.groups:
            check.wait(f"{label}: no consumer of {where[0]} yet")
        elif kafka.processed(group, where):
            check.fail(f"{label}: no DLQ record though {group} committed past it")
        else:
            check.wait(f"{label}: not yet consumed")
    unknown = sum(len(v) for k, v in kafka.scan.dlq.items() if k[0] == "?")
    if unknown:
        check.note = f"{unknown} DLQ records lack their origin headers"
    return check
