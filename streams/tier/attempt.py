"""What one attempt emits: pure functions from (job, outcome, response) to typed records.

No I/O: the processor decides and sends; these only build. Every string a website sent is
made storable here (schemas.text), so whatever they build can be encoded, produced and written.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from isal import igzip

import documents
from schemas import ErrorCode, derived_id, site_key
from schemas.extract import rules_from_json
from schemas.formats import DERIVED_FORMATS, MEDIA_TYPES, Format
from schemas.keys import document_object_key
from schemas.records import (
    Document,
    Escalation,
    JobStatus,
    Metering,
    RouteFeedback,
    ScrapeRequest,
    ScrapeResult,
)
from schemas.text import storable, storable_map
from streams.fetchers.base import FetchResponse
from streams.tier.extract_runner import ExtractRunner, ExtractTimeout
from streams.tier.outcome import Kind, Outcome

# Bodies at least this big are compressed and hashed on a helper thread: ISA-L and hashlib
# release the GIL, so the event loop serves other jobs meanwhile (a 1 MB page takes ~2 ms).
# Below it the hand-over (a future, a wake-up of the loop, the GIL changing hands) costs more
# than it frees: a 100 KB page compresses in ~0.2 ms.
OFFLOAD_BYTES = 256 * 1024
MAX_ERROR_MESSAGE = 2000


def pack_body(body: bytes) -> tuple[bytes, str]:
    """A body as results carry it: gzip (level 1, no timestamp) and the SHA-256 of the body.

    ISA-L's deflate (python-isal) writes standard gzip ~4x faster than zlib at level 1 and
    compresses as well: 0.07 vs 0.27 ms per page of the bench corpus (30 KB on average).
    """
    return igzip.compress(body, compresslevel=1, mtime=0), hashlib.sha256(body).hexdigest()


async def pack(body: bytes) -> tuple[bytes, str]:
    """:func:`pack_body`, off the event loop for big bodies."""
    if len(body) < OFFLOAD_BYTES:
        return pack_body(body)
    return await asyncio.get_running_loop().run_in_executor(None, pack_body, body)


_DERIVED: frozenset[str] = frozenset(f.value for f in DERIVED_FORMATS)


def wanted_documents(job: ScrapeRequest) -> list[str]:
    """The derived formats ``job`` asks for (none for a job asking for the page only)."""
    return [f for f in job.options.formats if f in _DERIVED]


def make_documents(job: ScrapeRequest, resp: FetchResponse, wanted: list[str]) -> list[Document]:
    """The derived formats of a fetched page, each gzipped and named where the sink stores it.

    CPU only (the parser, the converters, gzip); :func:`documents.derive` never raises.
    Extraction rules are not applied here: see :func:`derive_documents`."""
    made = documents.derive(
        resp.body,
        content_type=resp.content_type,
        url=resp.final_url,
        status=resp.status,
        headers=resp.headers,
        formats=[f for f in wanted if f != Format.EXTRACT],
        only_main_content=job.options.only_main_content,
    )
    return [_document(job, fmt, data) for fmt, data in made.items()]


def _document(job: ScrapeRequest, fmt: str, data: bytes) -> Document:
    return Document(
        format=fmt,
        media_type=MEDIA_TYPES[Format(fmt)],
        size=len(data),
        key=document_object_key(job.tenant, job.job_id, fmt),
        content=igzip.compress(data, compresslevel=1, mtime=0),
    )


async def derive_documents(
    job: ScrapeRequest, resp: FetchResponse, extractor: ExtractRunner | None
) -> tuple[list[Document], str | None]:
    """The documents ``job`` asks for, and a note when one could not be made.

    Formats are made here, off the event loop for big pages (lxml parses without the GIL);
    extraction rules, whose cost on a page no check can bound, run in ``extractor``'s child
    process under its deadline."""
    wanted = wanted_documents(job)
    if not wanted:
        return [], None
    if len(resp.body) < OFFLOAD_BYTES:
        docs = make_documents(job, resp, wanted)
    else:
        loop = asyncio.get_running_loop()
        docs = await loop.run_in_executor(None, make_documents, job, resp, wanted)
    note = None
    if Format.EXTRACT in wanted and job.options.extract:
        try:
            if extractor is None:
                data = extract_here(resp, job.options.extract)
            else:
                data = await extractor.extract(
                    resp.body,
                    content_type=resp.content_type,
                    url=resp.final_url,
                    status=resp.status,
                    headers=resp.headers,
                    rules_json=job.options.extract,
                )
        except ExtractTimeout as exc:
            note = f"extract: {exc}"
        else:
            docs.insert(wanted.index(Format.EXTRACT), _document(job, Format.EXTRACT.value, data))
    return docs, note


def extract_here(resp: FetchResponse, rules_json: str) -> bytes:
    """The extract document made in this process (tests, tools: no deadline)."""
    made = documents.derive(
        resp.body,
        content_type=resp.content_type,
        url=resp.final_url,
        status=resp.status,
        headers=resp.headers,
        formats=[Format.EXTRACT.value],
        extract=rules_from_json(rules_json),
    )
    return made.get(Format.EXTRACT.value, b"{}")


def result(
    job: ScrapeRequest,
    tier: str,
    outcome: Outcome,
    resp: FetchResponse | None,
    elapsed_s: float,
    code: ErrorCode | None = None,
    packed: tuple[bytes, str] | None = None,
    documents: list[Document] | None = None,
) -> ScrapeResult:
    """The job's final result; ``packed`` is :func:`pack_body` of the body when it succeeded,
    ``code`` overrides the outcome's error code (the policy's final word)."""
    body = resp.body if resp is not None and outcome.ok else None
    return ScrapeResult(
        event_id=derived_id(job.tenant, job.job_id, "result", tier, str(job.attempt)),
        job_id=job.job_id,
        tenant=job.tenant,
        url=storable(job.url),
        final_url=storable(resp.final_url) if resp is not None else None,
        tier=tier,
        attempts=job.attempt,
        status=JobStatus.SUCCEEDED if outcome.ok else JobStatus.FAILED,
        error_code=None if outcome.ok else (code or outcome.code or ErrorCode.INTERNAL).value,
        error_message=None
        if outcome.ok or outcome.reason is None
        else storable(outcome.reason)[:MAX_ERROR_MESSAGE],
        http_status=resp.status if resp is not None else None,
        content_type=storable(resp.content_type)
        if resp is not None and resp.content_type is not None
        else None,
        content=packed[0] if packed is not None else None,
        content_bytes=len(body) if body is not None else 0,
        content_sha256=packed[1] if packed is not None else None,
        response_headers=storable_map(resp.headers) if resp is not None else {},
        screenshot=getattr(resp, "screenshot", None) if outcome.ok else None,
        documents=documents or [],
        created_at=job.created_at,
        finished_at=datetime.now(UTC),
        duration_ms=int(elapsed_s * 1000),
        trace_id=job.trace_id,
    )


def metering(
    job: ScrapeRequest,
    tier: str,
    outcome: Outcome,
    resp: FetchResponse | None,
    elapsed_s: float,
    credits: int,
    cache_hit: bool = False,
) -> Metering:
    """Usage of this attempt; ``credits`` is what it costs (the processor's ``_charge``)."""
    return Metering(
        event_id=derived_id(job.tenant, job.job_id, "metering", tier, str(job.attempt)),
        job_id=job.job_id,
        tenant=job.tenant,
        tier=tier,
        attempt=job.attempt,
        outcome=outcome.kind.value,
        error_code=outcome.code.value if outcome.code else None,
        http_status=resp.status if resp is not None else None,
        bytes=resp.wire_bytes if resp is not None else 0,
        duration_ms=int(elapsed_s * 1000),
        credits=credits,
        egress_pool=outcome.egress_pool,
        cache_hit=cache_hit,
        created_at=datetime.now(UTC),
        trace_id=job.trace_id,
    )


def escalation(job: ScrapeRequest, tier: str, outcome: Outcome, to_tier: str) -> Escalation:
    return Escalation(
        event_id=derived_id(job.tenant, job.job_id, "escalation", tier, str(job.attempt)),
        job_id=job.job_id,
        tenant=job.tenant,
        url=job.url,
        from_tier=tier,
        to_tier=to_tier,
        reason=storable(outcome.reason or "blocked"),
        http_status=outcome.http_status,
        marker=outcome.marker,
        created_at=datetime.now(UTC),
        trace_id=job.trace_id,
    )


def route_feedback(job: ScrapeRequest, tier: str, outcome: Outcome) -> RouteFeedback:
    """What the router learns of the job's site from this attempt (a page or a block)."""
    return RouteFeedback(
        site=site_key(job.url),
        tier=tier,
        blocked=outcome.kind is Kind.BLOCKED,
        marker=outcome.marker,
        created_at=datetime.now(UTC),
    )


def retried(job: ScrapeRequest, delay_s: float) -> ScrapeRequest:
    """The job's next attempt in the same tier, due after ``delay_s``."""
    return replace(
        job,
        attempt=job.attempt + 1,
        tier_attempt=job.tier_attempt + 1,
        not_before=datetime.now(UTC) + timedelta(seconds=delay_s),
    )


def handed_over(job: ScrapeRequest, next_tier: str) -> ScrapeRequest:
    """The job's first attempt in ``next_tier``."""
    return replace(job, tier=next_tier, attempt=job.attempt + 1, tier_attempt=1, not_before=None)
