"""One tier's work on one record: decode → validate → fetch → classify → emit.

``TierProcessor.handle`` never raises for a bad record: undecodable values go to the DLQ with
the reason, invalid jobs end ``failed``. It returns only once its output records are durable
in Kafka, so the caller may then acknowledge the input offset. What an attempt emits is built
by :mod:`streams.tier.attempt`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from schemas import Codec, DecodeError, ErrorCode, TopicSet, delay_bucket, site_key
from schemas import headers as hdr
from schemas.cache import cache_key
from schemas.kafka import EventProducer
from schemas.options import DEFAULT_LIMITS, InvalidOptions, JobLimits, parse_options
from schemas.prices import DEFAULT_PRICES, Prices
from schemas.records import FINAL_STATUSES, FetchOptions, JobStatus, ScrapeRequest
from schemas.text import storable
from schemas.topics import MAX_MESSAGE_BYTES, TIER_ORDER
from schemas.urls import InvalidURL, validate_url
from streams.cache import CachedResponse, FetchCache
from streams.config import FetchConfig, WorkerConfig
from streams.errors import FetchError
from streams.fetchers.base import Fetcher, FetchRequest, FetchResponse
from streams.metrics import StreamMetrics
from streams.politeness import RobotsCache, SiteLimiter
from streams.politeness.limits import Feedback
from streams.tenants import TenantDirectory
from streams.tier import attempt
from streams.tier.extract_runner import ExtractRunner
from streams.tier.gates import Gates
from streams.tier.outcome import Kind, Outcome, classify_error, classify_response
from streams.tier.policy import Action, RetryPolicy, decide

log = logging.getLogger(__name__)
_TIERS = frozenset(t.value for t in TIER_ORDER)
# Room left in a Kafka record for its key, headers and batch framing.
RECORD_OVERHEAD_BYTES = 64 * 1024
# Kafka refusing a record for its size: sending it again cannot help, so the job fails instead.
_TOO_BIG_FOR_KAFKA = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)

Produced = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]
_NO_OPTIONS = FetchOptions()


class ResultTooLarge(Exception):
    """A job's output records would not fit in one Kafka record."""


@dataclass(frozen=True, slots=True)
class InputRecord:
    """A consumed Kafka record, independent of the consumer library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class TierProcessor:
    def __init__(
        self,
        tier: str,
        fetcher: Fetcher,
        producer: EventProducer,
        codec: Codec,
        topics: TopicSet,
        metrics: StreamMetrics,
        fetch_config: FetchConfig,
        worker_config: WorkerConfig,
        limiter: SiteLimiter,
        robots: RobotsCache | None,
        limits: JobLimits = DEFAULT_LIMITS,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        cache: FetchCache | None = None,
        extractor: ExtractRunner | None = None,
        prices: Prices = DEFAULT_PRICES,
        tenants: TenantDirectory | None = None,
    ) -> None:
        self.tier = tier
        self._gates = Gates(tier, worker_config, metrics, prices, cache, tenants)
        self._extractor = extractor
        self._limits = limits
        self._max_record_bytes = max_message_bytes - RECORD_OVERHEAD_BYTES
        self._fetcher = fetcher
        self._producer = producer
        self._codec = codec
        self._topics = topics
        self._metrics = metrics
        self._fetch_config = fetch_config
        self._limiter = limiter
        self._robots = robots
        self._robots_opt_out = frozenset(worker_config.robots_opt_out_tenants)
        self._max_site_backlog = worker_config.max_site_backlog
        self._retry = RetryPolicy(
            max_attempts=worker_config.max_attempts_per_tier,
            base_delay_s=worker_config.retry_base_delay_s,
        )
        self._rng = random.Random()
        # Label children resolved once: ``labels()`` takes a lock and hashes its arguments on
        # every call, several times per job.
        self._m_progress = metrics.jobs_in_progress.labels(tier)
        self._m_in_flight = metrics.in_flight.labels(tier)
        self._m_fetch_seconds = metrics.fetch_seconds.labels(tier)
        self._m_fetched_bytes = metrics.fetched_bytes.labels(tier)
        self._m_outcomes: dict[tuple[str, str], Any] = {}
        self._m_results = {s.value: metrics.results.labels(tier, s.value) for s in FINAL_STATUSES}

    async def handle(self, rec: InputRecord) -> None:
        progress = self._m_progress
        progress.inc()
        try:
            await self._handle_record(rec)
        finally:
            progress.dec()

    async def _handle_record(self, rec: InputRecord) -> None:
        try:
            job = self._codec.read_request(rec.value)
        except DecodeError as exc:
            await self.to_dlq(rec, exc.reason, exc.detail)
            return
        try:
            await self._handle(rec, job)
        except (asyncio.CancelledError, KafkaError):
            raise  # shutdown, or Kafka refusing our output: the input stays unacked
        except Exception as exc:
            # A bug must not wedge the partition nor leave the job unfinished: the job fails
            # with `internal`; only if even that cannot be sent does the record go to the DLQ.
            log.exception("job %s: processing failed", job.job_id)
            detail = f"{type(exc).__name__}: {exc}"
            try:
                await self._producer.send_many(
                    self._failure(job, ErrorCode.INTERNAL, f"processing failed: {detail}", 0.0)
                )
            except (asyncio.CancelledError, KafkaError):
                raise
            except Exception:
                log.exception("job %s: cannot even fail it", job.job_id)
                await self.to_dlq(rec, "processing_error", detail)

    async def _handle(self, rec: InputRecord, job: ScrapeRequest) -> None:
        trace_id = job.trace_id or hdr.get(rec.headers, hdr.TRACE_ID) or job.job_id
        job.trace_id = storable(trace_id)[:128]
        if job.created_at.timestamp() <= 0:
            job.created_at = datetime.now(UTC)
        extra = {"job_id": job.job_id, "trace_id": job.trace_id, "tier": self.tier}

        started = time.monotonic()
        response: FetchResponse | None = None
        try:
            url = validate_url(job.url)
            # Producers may publish straight to Kafka: the options pass the gateway's checks here.
            if job.options != _NO_OPTIONS:  # most jobs ask for nothing: nothing to check
                job.options = parse_options(job.options, self._limits)
        except InvalidURL as exc:
            outcome = Outcome(Kind.FATAL, ErrorCode.INVALID_URL, str(exc))
        except InvalidOptions as exc:
            outcome = Outcome(Kind.FATAL, ErrorCode.INVALID_REQUEST, str(exc))
        else:
            refusal = await self._gates.refused_tenant(job)
            response = None if refusal is not None else await self._gates.from_cache(job, url)
            if refusal is None and response is None:
                refusal = self._gates.over_budget(job)
            if response is not None:
                outcome = Outcome(Kind.OK, http_status=response.status)
            elif refusal is not None:
                outcome = refusal  # never fetched: the tier costs more than the job may spend
            else:
                site = site_key(url)
                backlog = self._limiter.queued(site)
                if backlog >= self._max_site_backlog:
                    # The site is at its limit with jobs already waiting: park this one in a
                    # delay topic instead of holding a slot other sites' jobs could use.
                    delay = backlog * self._limiter.delay_s(site)
                    await self.defer(job, rec, delay, "site_backlog")
                    return
                outcome, response = await self._polite_fetch(job, url, site)
        elapsed = time.monotonic() - started
        self._m_fetch_seconds.observe(elapsed)
        self._outcome_counter(outcome).inc()
        if response is not None:
            self._m_fetched_bytes.inc(len(response.body))

        try:
            records, what = await self._records(rec, job, outcome, response, elapsed)
        except ResultTooLarge as exc:
            records, what = self._failure(job, ErrorCode.TOO_LARGE, str(exc), elapsed), "failed"
        # Metering, result and hand-over go out together; the input is acked only after.
        try:
            await self._producer.send_many(records)
        except _TOO_BIG_FOR_KAFKA as exc:
            # The broker's limit is lower than ours (a topic configured apart): fail the job.
            message = f"the result is larger than Kafka accepts ({type(exc).__name__})"
            records = self._failure(job, ErrorCode.TOO_LARGE, message, elapsed)
            await self._producer.send_many(records)
            what = "failed"
        log.info(
            "job %s attempt %d %s in %.0f ms (%s)",
            job.job_id,
            job.attempt,
            what,
            elapsed * 1000,
            outcome.reason or outcome.http_status,
            extra=extra,
        )

    async def _records(
        self,
        rec: InputRecord,
        job: ScrapeRequest,
        outcome: Outcome,
        response: FetchResponse | None,
        elapsed: float,
    ) -> tuple[list[Produced], str]:
        """The records this attempt emits, and what became of the job (for the log).

        Raises :class:`ResultTooLarge` when a record would not fit in Kafka."""
        decision = decide(
            outcome,
            tier=self.tier,
            tier_attempt=job.tier_attempt,
            max_tier=job.max_tier if job.max_tier in _TIERS else "stealth",
            policy=self._retry,
            rng=self._rng,
        )
        headers = hdr.make(trace_id=job.trace_id, job_id=job.job_id, tenant=job.tenant)
        key = job.job_id.encode()
        write = self._codec.write
        cached = response if isinstance(response, CachedResponse) else None
        charge = self._gates.charge(outcome, cached is not None, decision.action is Action.FINISH)
        metering = attempt.metering(
            job, self.tier, outcome, response, elapsed, charge, cache_hit=cached is not None
        )
        records: list[Produced] = [(self._topics.metering, key, write(metering), headers)]
        if decision.action is Action.FINISH:
            packed = docs = note = None
            if response is not None and outcome.ok:
                packed = await attempt.pack(response.body)
                docs, note = await attempt.derive_documents(job, response, self._extractor)
            result = attempt.result(
                job, self.tier, outcome, response, elapsed, decision.code, packed, docs
            )
            result.credits = charge
            if note is not None:
                result.error_message = note  # a format the job asked for could not be made
            if outcome.ok:
                result.cache_key = cache_key(job.url, job.options)
                if cached is not None:
                    result.cached_from = cached.job_id
            value = write(result)
            if len(value) > self._max_record_bytes:
                raise ResultTooLarge(
                    f"the result is {len(value)} bytes (gzipped page"
                    f" {len(packed[0]) if packed else 0}, screenshot"
                    f" {len(result.screenshot or b'')}, documents"
                    f" {sum(len(d.content or b'') for d in result.documents)}), more than the"
                    f" {self._max_record_bytes} a result record may carry; ask for a smaller"
                    " options.max_body_bytes, fewer formats or a viewport screenshot"
                )
            records.append((self._topics.results, key, value, headers))
            self._m_results[result.status].inc()
            what = result.status
        elif decision.action is Action.RETRY:
            bucket = delay_bucket(decision.delay_s)
            retry = attempt.retried(job, decision.delay_s)
            records.append((self._topics.delay(self.tier, bucket), rec.key, write(retry), headers))
            self._metrics.deferred.labels(self.tier, "retry", str(bucket)).inc()
            what = f"retry in {bucket}s"
        else:
            assert decision.next_tier is not None
            escalation = attempt.escalation(job, self.tier, outcome, decision.next_tier)
            upper = attempt.handed_over(job, decision.next_tier)
            records += [
                (self._topics.escalations, key, write(escalation), headers),
                (self._topics.tier(decision.next_tier), rec.key, write(upper), headers),
            ]
            self._metrics.escalations.labels(
                self.tier, decision.next_tier, outcome.marker or ""
            ).inc()
            what = f"escalated to {decision.next_tier}"
        if outcome.ok or outcome.kind is Kind.BLOCKED:
            feedback = attempt.route_feedback(job, self.tier, outcome)
            records.append((self._topics.routing, feedback.site.encode(), write(feedback), []))
        return records, what

    def _failure(
        self, job: ScrapeRequest, code: ErrorCode, message: str, elapsed: float
    ) -> list[Produced]:
        """Metering and a ``failed`` result for ``job``, carrying nothing the site sent: what
        is emitted when the attempt's own records cannot be."""
        outcome = Outcome(Kind.FATAL, code, message)
        headers = hdr.make(trace_id=job.trace_id, job_id=job.job_id, tenant=job.tenant)
        key = job.job_id.encode()
        charge = self._gates.charge(outcome, cached=False, final=True)
        metering = attempt.metering(job, self.tier, outcome, None, elapsed, charge)
        result = attempt.result(job, self.tier, outcome, None, elapsed)
        result.credits = charge
        self._m_results[JobStatus.FAILED].inc()
        return [
            (self._topics.metering, key, self._codec.write(metering), headers),
            (self._topics.results, key, self._codec.write(result), headers),
        ]

    def _outcome_counter(self, outcome: Outcome) -> Any:
        key = (outcome.kind.value, outcome.code.value if outcome.code else "")
        counter = self._m_outcomes.get(key)
        if counter is None:
            counter = self._m_outcomes[key] = self._metrics.fetch_outcome.labels(self.tier, *key)
        return counter

    async def _polite_fetch(
        self, job: ScrapeRequest, url: str, site: str
    ) -> tuple[Outcome, FetchResponse | None]:
        """robots.txt, then the site's rate/concurrency slot, then the fetch."""
        crawl_delay: float | None = None
        if self._robots is not None and job.tenant not in self._robots_opt_out:
            try:
                verdict = await self._robots.check(url)
            except FetchError as exc:
                return classify_error(exc), None
            if not verdict.allowed:
                self._metrics.robots_refused.labels(self.tier).inc()
                return Outcome(Kind.FATAL, ErrorCode.ROBOTS_DISALLOWED, verdict.reason), None
            crawl_delay = verdict.crawl_delay_s
        await self._limiter.acquire(site, crawl_delay)
        started = time.monotonic()
        outcome: Outcome | None = None
        response: FetchResponse | None = None
        self._m_in_flight.inc()
        try:
            response = await self._fetcher.fetch(self._request(job, url))
            outcome = classify_response(response, self.tier)
            if response.egress_pool is not None:
                outcome = replace(outcome, egress_pool=response.egress_pool)
        except FetchError as exc:
            outcome = classify_error(exc)
            if exc.egress_pool is not None:
                outcome = replace(outcome, egress_pool=exc.egress_pool)
        finally:
            self._m_in_flight.dec()
            # Always return the slot (even when cancelled), with what the site told us.
            self._limiter.release(
                site,
                _feedback(outcome, self._short_deadline(job)),
                time.monotonic() - started,
                outcome.retry_after_s if outcome is not None else None,
            )
        return outcome, response

    def _short_deadline(self, job: ScrapeRequest) -> bool:
        """Whether the job set a deadline shorter than this deployment's default."""
        chosen = job.options.timeout_s
        return chosen is not None and chosen < self._fetch_config.timeout_s

    def _request(self, job: ScrapeRequest, url: str) -> FetchRequest:
        opts = job.options
        if self.tier == "http":
            return FetchRequest(
                url=url,
                headers=opts.headers,
                timeout_s=opts.timeout_s,
                max_body_bytes=opts.max_body_bytes,
                egress_pool=opts.egress_pool,
                session_id=opts.session_id,
            )
        from streams.browser.request import BrowserRequest

        stealth = self.tier == "stealth"
        return BrowserRequest(
            url=url,
            headers=opts.headers,
            # The premium tier waits longer by default: slow sites are why jobs get there.
            timeout_s=opts.timeout_s or (self._fetch_config.timeout_s * 2 if stealth else None),
            max_body_bytes=opts.max_body_bytes,
            wait_until=opts.wait_until or ("networkidle" if stealth else "load"),
            wait_for=opts.wait_for,
            screenshot=opts.screenshot,
            block_resources=frozenset(opts.block_resources),
            egress_pool=opts.egress_pool,
            # The tenant keys the browser contexts its jobs share (never another tenant's).
            # Persistent profiles (cookies across a session's jobs) are the stealth tier's; with
            # them the session also pins its egress proxy. The browser tier ignores session_id.
            tenant=job.tenant,
            session_id=opts.session_id if stealth else None,
        )

    async def defer(self, job: ScrapeRequest, rec: InputRecord, wait_s: float, reason: str) -> None:
        """Send ``job`` to this tier's delay topic that waits at least ``wait_s`` (capped)."""
        bucket = delay_bucket(wait_s)
        job.not_before = datetime.now(UTC) + timedelta(seconds=bucket)
        await self._producer.send(
            self._topics.delay(self.tier, bucket),
            self._codec.write(job),
            key=rec.key,
            headers=hdr.make(trace_id=job.trace_id, job_id=job.job_id, tenant=job.tenant),
        )
        self._metrics.deferred.labels(self.tier, reason, str(bucket)).inc()
        log.info(
            "job %s deferred %ds (%s)",
            job.job_id,
            bucket,
            reason,
            extra={"job_id": job.job_id, "trace_id": job.trace_id, "tier": self.tier},
        )

    async def to_dlq(self, rec: InputRecord, reason: str, detail: str) -> None:
        """Send the record to the DLQ (see EventProducer.dead_letter) and count it."""
        await self._producer.dead_letter(self._topics.dlq, rec, reason, detail)
        self._metrics.dlq.labels(rec.topic, reason).inc()
        log.warning(
            "record %s[%d]@%d to DLQ: %s (%s)", rec.topic, rec.partition, rec.offset, reason, detail
        )


def _feedback(outcome: Outcome | None, short_deadline: bool = False) -> str:
    """What an attempt tells the site's limiter. A timeout under a deadline the job chose
    shorter than the deployment's says nothing about the site (nor slows it for others)."""
    if outcome is None:
        return Feedback.ERROR
    if outcome.ok:
        return Feedback.OK
    if outcome.http_status in (429, 503):
        return Feedback.THROTTLED
    if outcome.code is ErrorCode.TIMEOUT:
        return Feedback.ERROR if short_deadline else Feedback.SLOW
    return Feedback.ERROR
