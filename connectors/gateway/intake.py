"""Taking jobs in: a submission's fields checked into a ScrapeRequest, the account's limits
(connectors/gateway/accounts.py), then Kafka. A job is accepted only once Kafka has it; a 503 means
nothing was accepted (or, ``unconfirmed``, that the same job id may be sent again)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter
from psycopg_pool import AsyncConnectionPool

from connectors.config import GatewayConfig
from connectors.gateway.accounts import Admission, AdmissionLimits, admit, release
from connectors.gateway.api import SUBMISSION_FIELDS, ApiError
from connectors.sinks.pg import INSERT_QUEUED, queued_params
from schemas import default_codec, site_key
from schemas import headers as hdr
from schemas.kafka import EventProducer, KafkaConfig
from schemas.options import InvalidOptions, JobLimits, parse_options
from schemas.records import AUTO, ScrapeRequest
from schemas.urls import InvalidURL, validate_url

__all__ = ["Intake"]

log = logging.getLogger(__name__)

ADMIT_TIMEOUT_S = 1.0  # the most a submission waits for the account database
DB_RETRY_S = 5.0  # after it failed, how long admission goes on without it


class Intake:
    def __init__(
        self,
        config: GatewayConfig,
        kafka: KafkaConfig,
        limits: JobLimits,
        admission: AdmissionLimits,
        registry: CollectorRegistry,
        *,
        producer: Callable[[], EventProducer | None],
        pool: Callable[[], AsyncConnectionPool | None],
    ) -> None:
        self._config = config
        self._kafka = kafka
        self._limits = limits
        self._admission = admission
        self._producer = producer
        self._pool = pool
        self._codec = default_codec()
        self._enabled_tiers = (*config.tiers, AUTO)
        self._db_down_until = 0.0  # admission skips PostgreSQL until then (it was away)
        self._unreserved = Counter(
            "scrapifie_gateway_unreserved_jobs_total",
            "Jobs accepted without reserving credits, PostgreSQL being unreachable.",
            registry=registry,
        )
        self._jobs = Counter(
            "scrapifie_gateway_jobs_total", "Jobs accepted.", ["tier"], registry=registry
        )

    def build(self, body: dict[str, Any], tenant: str, trace_id: str) -> ScrapeRequest:
        unknown = set(body) - SUBMISSION_FIELDS
        if unknown:
            raise ApiError(
                400,
                "invalid_request",
                f"unknown fields: {', '.join(sorted(map(str, unknown)))[:200]}"
                f" (valid: {', '.join(sorted(SUBMISSION_FIELDS))})",
            )
        try:
            url = validate_url(body.get("url"))  # type: ignore[arg-type]
        except InvalidURL as exc:
            raise ApiError(400, "invalid_url", str(exc)) from exc
        tier = body.get("tier") or self._config.default_tier
        if tier not in self._enabled_tiers:
            raise ApiError(
                400,
                "invalid_tier",
                f"tier must be one of {', '.join(self._enabled_tiers)} (got {tier!r:.40})",
            )
        # Default: escalate as far as this deployment has tier workers.
        max_tier = body.get("max_tier") or self._config.tiers[-1]
        if max_tier not in self._config.tiers:
            raise ApiError(
                400, "invalid_request", f"max_tier must be one of {', '.join(self._config.tiers)}"
            )
        job_id = body.get("job_id") or str(uuid.uuid4())
        try:
            job_id = str(uuid.UUID(str(job_id)))
        except ValueError as exc:
            raise ApiError(400, "invalid_request", "job_id must be a UUID (or omitted)") from exc
        try:
            options = parse_options(body.get("options") or {}, self._limits)
        except InvalidOptions as exc:
            raise ApiError(400, "invalid_request", str(exc)) from exc
        return ScrapeRequest(
            job_id=job_id,
            tenant=tenant,
            url=url,
            tier=tier,
            max_tier=max_tier,
            options=options,
            created_at=datetime.now(UTC),
            trace_id=trace_id,
        )

    async def submit(self, tenant: str, jobs: list[ScrapeRequest]) -> None:
        """Reserve the jobs' credits (402/429 when the account cannot take them), then queue
        them; a job Kafka refused gives its reservation back."""
        admission = await self._admit(tenant, jobs)
        try:
            await self._publish(jobs)
        except ApiError as exc:
            if admission is not None and admission.new_ids and exc.code == "unavailable":
                pool = self._pool()
                try:  # not accepted: nothing may stay reserved (a leak is reaped later anyway)
                    assert pool is not None
                    async with asyncio.timeout(2), pool.connection() as conn:
                        await release(conn, tenant, admission.new_ids)
                except (psycopg.Error, TimeoutError) as err:
                    log.warning("reservations of refused jobs kept for now: %s", err)
            raise

    async def _admit(self, tenant: str, jobs: list[ScrapeRequest]) -> Admission | None:
        pool = self._pool()
        if pool is None:
            raise ApiError(503, "unavailable", "the gateway is starting", {"Retry-After": "2"})
        try:
            if time.monotonic() < self._db_down_until:
                raise TimeoutError("PostgreSQL did not answer a moment ago")
            async with asyncio.timeout(ADMIT_TIMEOUT_S), pool.connection() as conn:
                return await admit(conn, tenant, jobs, self._admission)
        except (psycopg.Error, TimeoutError) as exc:
            # Not asked again for a while: every submission would wait for it meanwhile.
            self._db_down_until = max(self._db_down_until, time.monotonic() + DB_RETRY_S)
            if not self._config.admit_without_db:
                raise ApiError(
                    503,
                    "unavailable",
                    "the account database is unavailable; nothing was accepted, retry shortly",
                    {"Retry-After": "5"},
                ) from exc
            # Availability first (SCRAPIFIE_GATEWAY__ADMIT_WITHOUT_DB): the jobs run
            # unreserved and are charged when they end.
            log.warning("admitting %d job(s) of %s without reserving: %s", len(jobs), tenant, exc)
            self._unreserved.inc(len(jobs))
            return None

    async def _publish(self, jobs: list[ScrapeRequest]) -> None:
        producer = self._producer()
        if producer is None:
            raise ApiError(
                503, "unavailable", "the pipeline is starting; retry shortly", {"Retry-After": "2"}
            )
        records = [
            (
                self._kafka.topics.requests if j.tier == AUTO else self._kafka.topics.tier(j.tier),
                site_key(j.url).encode(),
                self._codec.write(j),
                hdr.make(trace_id=j.trace_id, job_id=j.job_id, tenant=j.tenant),
            )
            for j in jobs
        ]
        # A 503 must mean "not accepted": once handed to the producer a record is delivered
        # whenever Kafka comes back, so records go in only while the leaders answer.
        if not await producer.leaders_reachable({t for t, *_ in records}):
            raise ApiError(
                503,
                "unavailable",
                "the job queue (Kafka) is unavailable; nothing was accepted, retry shortly",
                {"Retry-After": "5"},
            )
        try:
            async with asyncio.timeout(self._config.publish_timeout_s):
                await producer.send_many(records)
        except TimeoutError as exc:
            # Kafka went away after the records were handed over: they may still run. Saying so
            # (with the ids to retry with: job ids are idempotent) beats a false "refused".
            ids = ", ".join(j.job_id for j in jobs[:5]) + (", ..." if len(jobs) > 5 else "")
            raise ApiError(
                503,
                "unconfirmed",
                "Kafka did not confirm the job(s) in time; they may still run. Retry with the"
                f" same job_id to avoid a duplicate: {ids}",
                {"Retry-After": "5"},
            ) from exc
        for j in jobs:
            self._jobs.labels(j.tier).inc()
        # Best effort: makes GET /v1/jobs/{id} answer 'queued' at once. The ledger sink writes the
        # same row from the tier topic, so a database outage here loses nothing.
        try:
            pool = self._pool()
            assert pool is not None
            async with asyncio.timeout(2), pool.connection() as conn, conn.cursor() as cur:
                await cur.executemany(INSERT_QUEUED, queued_params(jobs))
        except (psycopg.Error, TimeoutError) as exc:
            log.info("queued rows not written now (%s); the ledger sink will", exc)
