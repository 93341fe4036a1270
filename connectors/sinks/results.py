"""The results sink: content object first, then the job row, per final result.

Per job only the first final result counts: a result for a job whose row is already final is
skipped entirely (no object, no row change). Because the object is written before the row, a
``succeeded`` row always has its object; a crash between the two replays the same result, whose
object is already there (``put_if_absent``) and whose row is then written. The same transaction
notifies the gateway's waiters (``NOTIFY_FINAL``), so they wake once the rows are visible.
"""

from __future__ import annotations

import json

from connectors.sinks.base import Decoded
from connectors.sinks.pg import (
    NOTIFY_FINAL,
    SETTLE,
    UPSERT_RESULTS,
    PgWriter,
    StoredResult,
    notify_params,
    results_params,
    settle_params,
)
from connectors.storage import ObjectStore
from schemas import TopicSet, content_object_key, screenshot_object_key
from schemas.records import Document, ScrapeResult


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
        first: dict[tuple[str, str], ScrapeResult] = {}
        for d in batch:
            assert isinstance(d.value, ScrapeResult)
            first.setdefault((d.value.tenant, d.value.job_id), d.value)
        done = await self._db.final_jobs(list(first))
        todo = [_stored(r) for job, r in first.items() if job not in done]
        objects: list[tuple[str, bytes, str]] = []
        for row in todo:
            if row.content_key is not None and row.result.content is not None:
                objects.append((row.content_key, row.result.content, "application/gzip"))
            if row.screenshot_key is not None and row.result.screenshot is not None:
                objects.append((row.screenshot_key, row.result.screenshot, "image/png"))
            for doc in row.result.documents:
                if doc.content is not None:
                    objects.append((doc.key, doc.content, "application/gzip"))
        await self._store.put_many_if_absent(objects)  # durable before any row names them
        # The notification goes out with the commit: a woken waiter reads the final row.
        await self._db.execute_many(
            [
                (UPSERT_RESULTS, results_params(todo)),
                (SETTLE, settle_params(todo)),
                (NOTIFY_FINAL, notify_params(row.result.job_id for row in todo)),
            ]
        )


def _stored(result: ScrapeResult) -> StoredResult:
    """``result`` with the deterministic names of its objects (None where it has none)."""
    return StoredResult(
        result,
        content_key=None
        if result.content is None
        else content_object_key(result.tenant, result.job_id),
        screenshot_key=None
        if result.screenshot is None
        else screenshot_object_key(result.tenant, result.job_id),
        documents=document_manifest(result.documents),
        # The result cache answers later jobs with these (connectors/cache.py).
        response_headers=json.dumps(result.response_headers, separators=(",", ":"))
        if result.cache_key is not None and result.cached_from is None
        else None,
    )


def document_manifest(documents: list[Document]) -> str | None:
    """The ``jobs.documents`` value: each derived format's media type, size and object key."""
    if not documents:
        return None
    return json.dumps(
        [
            {"format": d.format, "media_type": d.media_type, "bytes": d.size, "key": d.key}
            for d in documents
        ],
        separators=(",", ":"),
    )
