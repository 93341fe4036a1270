"""The results sink: content object first, then the job row, per final result.

Per job only the first final result counts: a result for a job whose row is already final is
skipped entirely (no object, no row change). Because the object is written before the row, a
``succeeded`` row always has its object; a crash between the two replays the same result, whose
object is already there (``put_if_absent``) and whose row is then written. The same transaction
notifies the gateway's waiters (``NOTIFY_FINAL``), so they wake once the rows are visible.
"""

from __future__ import annotations

from typing import Any

from connectors.sinks.base import Decoded
from connectors.sinks.pg import (
    NOTIFY_FINAL,
    UPSERT_RESULTS,
    PgWriter,
    notify_params,
    results_params,
)
from connectors.storage import ObjectStore
from schemas import TopicSet, content_object_key, screenshot_object_key


class ResultsSink:
    name = "results"

    def __init__(self, topics: TopicSet, db: PgWriter, store: ObjectStore) -> None:
        self._topics = topics
        self._db = db
        self._store = store

    def topics(self) -> list[str]:
        return [self._topics.results]

    def dlq_topics(self) -> set[str]:
        return {self._topics.results}

    async def write(self, batch: list[Decoded]) -> None:
        first: dict[tuple[str, str], dict[str, Any]] = {}
        for d in batch:
            first.setdefault((d.value["tenant"], d.value["job_id"]), d.value)
        done = await self._db.final_jobs(list(first))
        todo = [r for job, r in first.items() if job not in done]
        objects: list[tuple[str, bytes, str]] = []
        for r in todo:
            key, shot = _key(r), _shot_key(r)
            if key is not None:
                objects.append((key, r["content"], "application/gzip"))
            if shot is not None:
                objects.append((shot, r["screenshot"], "image/png"))
        await self._store.put_many_if_absent(objects)  # durable before any row names them
        rows = [{**r, "content_key": _key(r), "screenshot_key": _shot_key(r)} for r in todo]
        # The notification goes out with the commit: a woken waiter reads the final row.
        await self._db.execute_many(
            [
                (UPSERT_RESULTS, results_params(rows)),
                (NOTIFY_FINAL, notify_params(r["job_id"] for r in rows)),
            ]
        )


def _key(result: dict[str, Any]) -> str | None:
    if result["content"] is None:
        return None
    return content_object_key(result["tenant"], result["job_id"])


def _shot_key(result: dict[str, Any]) -> str | None:
    if result["screenshot"] is None:
        return None
    return screenshot_object_key(result["tenant"], result["job_id"])
