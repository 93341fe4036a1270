"""The HTTP ingest gateway: accepts jobs from people and publishes them to Kafka.

Writes go to Kafka only (the sinks own PostgreSQL), so the gateway keeps accepting jobs while
PostgreSQL is down; reads come from PostgreSQL and answer 503 while it is down. Every error body
is ``{"error": {"code": ..., "message": <what to fix>}}``.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from connectors.config import GatewayConfig
from connectors.openapi import OPENAPI
from connectors.sinks.pg import INSERT_QUEUED, queued_params
from connectors.storage import ObjectStore, StorageError
from schemas import default_codec, site_key
from schemas import headers as hdr
from schemas.kafka import EventProducer, KafkaConfig
from schemas.urls import InvalidURL, validate_url

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TENANT: web.RequestKey[str] = web.RequestKey("tenant", str)
TRACE: web.RequestKey[str] = web.RequestKey("trace_id", str)
KEY_CACHE_TTL_S = 60.0
FINAL = ("succeeded", "failed")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        kafka: KafkaConfig,
        dsn: str,
        store: ObjectStore,
        registry: CollectorRegistry,
    ) -> None:
        self._config = config
        self._kafka = kafka
        self._dsn = dsn
        self._store = store
        self._registry = registry
        self._enabled_tiers = (*config.tiers, "auto")
        self._codec = default_codec()
        self._keys: dict[str, tuple[str, float]] = {}
        self._producer: EventProducer | None = None
        self._pool: AsyncConnectionPool | None = None
        self._requests = Counter(
            "scrapifie_gateway_requests_total",
            "HTTP requests.",
            ["route", "status"],
            registry=registry,
        )
        self._latency = Histogram(
            "scrapifie_gateway_request_seconds",
            "HTTP request latency.",
            ["route"],
            registry=registry,
        )
        self._jobs = Counter(
            "scrapifie_gateway_jobs_total", "Jobs accepted.", ["tier"], registry=registry
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self._config.max_body_bytes, middlewares=[self._middleware]
        )
        app.router.add_post("/v1/jobs", self.post_job)
        app.router.add_post("/v1/jobs/batch", self.post_batch)
        app.router.add_get("/v1/jobs/{job_id}", self.get_job)
        app.router.add_get("/v1/jobs/{job_id}/content", self.get_content)
        app.router.add_get("/v1/jobs/{job_id}/screenshot", self.get_screenshot)
        app.router.add_get("/v1/usage", self.get_usage)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/openapi.json", self.openapi)
        app.cleanup_ctx.append(self._resources)
        return app

    async def _resources(self, _app: web.Application) -> Any:
        self._pool = AsyncConnectionPool(
            self._dsn,
            min_size=1,
            max_size=16,
            open=False,
            timeout=5,
            kwargs={"connect_timeout": 5},
        )
        await self._pool.open(wait=False)
        async with EventProducer(self._kafka, "gateway") as producer:
            self._producer = producer
            try:
                yield
            finally:
                self._producer = None
                await self._pool.close()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = (
            request.match_info.route.resource.canonical
            if request.match_info.route.resource
            else "?"
        )
        trace_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        request[TRACE] = trace_id[:128]
        started = time.monotonic()
        try:
            if request.path.startswith("/v1/"):
                request[TENANT] = await self._authenticate(request)
            resp = await handler(request)
        except ApiError as exc:
            resp = error_response(exc.status, exc.code, exc.message, exc.headers)
        except web.HTTPRequestEntityTooLarge:
            resp = error_response(
                413, "too_large", f"request body over {self._config.max_body_bytes} bytes"
            )
        except web.HTTPException as exc:
            resp = error_response(exc.status, "http_error", exc.reason)
        resp.headers["X-Request-ID"] = request[TRACE]
        self._requests.labels(route, str(resp.status)).inc()
        self._latency.labels(route).observe(time.monotonic() - started)
        return resp

    async def _authenticate(self, request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <api key>'")
        digest = hashlib.sha256(auth[7:].strip().encode()).hexdigest()
        cached = self._keys.get(digest)
        now = time.monotonic()
        if cached and now - cached[1] < KEY_CACHE_TTL_S:
            return cached[0]
        try:
            row = await self._fetchone(
                "SELECT tenant_id FROM tenants WHERE api_key_sha256 = %s", digest
            )
        except ApiError:
            if cached:  # database away: keep serving known keys so jobs still flow into Kafka
                return cached[0]
            raise
        if row is None:
            raise ApiError(401, "unauthorized", "unknown API key")
        self._keys[digest] = (row["tenant_id"], now)
        return str(row["tenant_id"])

    async def _fetchone(self, sql: str, *args: Any) -> dict[str, Any] | None:
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(sql, args)
                return await cur.fetchone()
        except (psycopg.OperationalError, TimeoutError, psycopg.errors.AdminShutdown) as exc:
            log.warning("database unavailable: %s", exc)
            raise ApiError(
                503,
                "unavailable",
                "the job database is unavailable; retry shortly",
                {"Retry-After": "5"},
            ) from exc

    # -- jobs ----------------------------------------------------------------------------------
    async def post_job(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", "body must be a JSON object with at least 'url'")
        job = self._build_job(body, request[TENANT], request[TRACE])
        await self._publish([job])
        wait_s = _wait_param(request, self._config.max_wait_s)
        if wait_s:
            row = await self._wait_final(job["job_id"], request[TENANT], wait_s)
            if row is not None:
                return web.json_response(_job_json(row), status=200)
        return web.json_response(_accepted(job), status=202)

    async def post_batch(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        items = body.get("jobs") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise ApiError(400, "invalid_request", 'body must be {"jobs": [{"url": ...}, ...]}')
        if len(items) > self._config.max_batch:
            raise ApiError(413, "too_large", f"at most {self._config.max_batch} jobs per batch")
        jobs = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ApiError(400, "invalid_request", f"jobs[{i}] must be an object")
            try:
                jobs.append(self._build_job(item, request[TENANT], request[TRACE]))
            except ApiError as exc:
                raise ApiError(exc.status, exc.code, f"jobs[{i}]: {exc.message}") from exc
        await self._publish(jobs)
        return web.json_response({"jobs": [_accepted(j) for j in jobs]}, status=202)

    def _build_job(self, body: dict[str, Any], tenant: str, trace_id: str) -> dict[str, Any]:
        try:
            url = validate_url(body.get("url"))  # type: ignore[arg-type]
        except InvalidURL as exc:
            raise ApiError(400, "invalid_url", str(exc)) from exc
        tier = body.get("tier") or self._config.default_tier
        if tier not in self._enabled_tiers:
            raise ApiError(
                400,
                "invalid_tier",
                f"tier must be one of {', '.join(self._enabled_tiers)} (got {tier!r})",
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
        options = _options(body.get("options") or {})
        return {
            "job_id": job_id,
            "tenant": tenant,
            "url": url,
            "tier": tier,
            "max_tier": max_tier,
            "attempt": 1,
            "options": options,
            "created_at": datetime.now(UTC),
            "trace_id": trace_id,
            "router_reason": None,
            "not_before": None,
        }

    async def _publish(self, jobs: list[dict[str, Any]]) -> None:
        if self._producer is None:
            raise ApiError(
                503, "unavailable", "the pipeline is starting; retry shortly", {"Retry-After": "2"}
            )
        records = [
            (
                self._kafka.topics.requests
                if j["tier"] == "auto"
                else self._kafka.topics.tier(j["tier"]),
                site_key(j["url"]).encode(),
                self._codec.encode("ScrapeRequest", j),
                hdr.make(trace_id=j["trace_id"], job_id=j["job_id"], tenant=j["tenant"]),
            )
            for j in jobs
        ]
        # A 503 must mean "not accepted": once handed to the producer a record is delivered
        # whenever Kafka comes back, so records go in only while the leaders answer.
        if not await self._producer.leaders_reachable({t for t, *_ in records}):
            raise ApiError(
                503,
                "unavailable",
                "the job queue (Kafka) is unavailable; nothing was accepted, retry shortly",
                {"Retry-After": "5"},
            )
        try:
            async with asyncio.timeout(self._config.publish_timeout_s):
                await self._producer.send_many(records)
        except TimeoutError as exc:
            # Kafka went away after the records were handed over: they may still run. Saying so
            # (with the ids to retry with: job ids are idempotent) beats a false "refused".
            ids = ", ".join(j["job_id"] for j in jobs[:5]) + (", ..." if len(jobs) > 5 else "")
            raise ApiError(
                503,
                "unconfirmed",
                "Kafka did not confirm the job(s) in time; they may still run. Retry with the"
                f" same job_id to avoid a duplicate: {ids}",
                {"Retry-After": "5"},
            ) from exc
        for j in jobs:
            self._jobs.labels(j["tier"]).inc()
        # Best effort: makes GET /v1/jobs/{id} answer 'queued' at once. The ledger sink writes the
        # same row from the tier topic, so a database outage here loses nothing.
        try:
            assert self._pool is not None
            async with asyncio.timeout(2), self._pool.connection() as conn, conn.cursor() as cur:
                await cur.executemany(INSERT_QUEUED, queued_params(jobs))
        except (psycopg.Error, TimeoutError) as exc:
            log.info("queued rows not written now (%s); the ledger sink will", exc)

    async def _wait_final(self, job_id: str, tenant: str, wait_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + wait_s
        delay = 0.02
        while True:
            row = await self._job_row(job_id, tenant)
            if row is not None and row["status"] in FINAL:
                return row
            if time.monotonic() + delay > deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    async def _job_row(self, job_id: str, tenant: str) -> dict[str, Any] | None:
        return await self._fetchone(
            "SELECT * FROM jobs WHERE job_id = %s AND tenant_id = %s", job_id, tenant
        )

    async def get_job(self, request: web.Request) -> web.Response:
        row = await self._job_row(request.match_info["job_id"], request[TENANT])
        if row is None:
            raise ApiError(404, "not_found", "no such job for this API key")
        return web.json_response(_job_json(row))

    async def get_content(self, request: web.Request) -> web.Response:
        row, data = await self._stored(
            request,
            "content_key",
            "no_content",
            lambda r: f"job is {r['status']}; content exists only for succeeded jobs",
        )
        return web.Response(
            body=gzip.decompress(data),
            headers={"Content-Type": row["content_type"] or "application/octet-stream"},
        )

    async def get_screenshot(self, request: web.Request) -> web.Response:
        _row, data = await self._stored(
            request,
            "screenshot_key",
            "no_screenshot",
            lambda _r: "no screenshot: ask for options.screenshot on a browser tier",
        )
        return web.Response(body=data, headers={"Content-Type": "image/png"})

    async def _stored(
        self,
        request: web.Request,
        key_column: str,
        code: str,
        missing: Callable[[dict[str, Any]], str],
    ) -> tuple[dict[str, Any], bytes]:
        """The caller's job row and the object its ``key_column`` names (404/503 otherwise)."""
        row = await self._job_row(request.match_info["job_id"], request[TENANT])
        if row is None:
            raise ApiError(404, "not_found", "no such job for this API key")
        if row["status"] != "succeeded" or not row.get(key_column):
            raise ApiError(404, code, missing(row))
        try:
            data = await self._store.get(row[key_column])
        except StorageError as exc:
            raise ApiError(
                503,
                "unavailable",
                "object storage is unavailable; retry shortly",
                {"Retry-After": "5"},
            ) from exc
        if data is None:
            raise ApiError(404, code, "object not found in storage")
        return row, data

    async def get_usage(self, request: web.Request) -> web.Response:
        row = await self._fetchone(
            "SELECT t.credits AS credits_remaining,"
            " (SELECT count(*) FROM attempts a WHERE a.tenant_id = t.tenant_id) AS attempts,"
            " (SELECT coalesce(sum(a.credits), 0) FROM attempts a WHERE a.tenant_id = t.tenant_id)"
            " AS credits_used FROM tenants t WHERE t.tenant_id = %s",
            request[TENANT],
        )
        return web.json_response(
            {"tenant": request[TENANT], **{k: int(v) for k, v in (row or {}).items()}}
        )

    # -- operations ----------------------------------------------------------------------------
    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        problems = []
        if self._producer is None:
            problems.append("kafka producer not started")
        elif not await self._producer.leaders_reachable([self._kafka.topics.requests], 1.0):
            problems.append("kafka unavailable")
        try:
            await self._fetchone("SELECT 1 AS ok")
        except ApiError:
            problems.append("database unavailable")
        if problems:
            return error_response(503, "not_ready", "; ".join(problems))
        return web.json_response({"status": "ready"})

    async def metrics(self, _request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self._registry))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)


async def _json_body(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from exc


def _wait_param(request: web.Request, max_wait_s: float) -> float:
    raw = request.query.get("wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_request", "wait must be a number of seconds") from exc
    if not 0 <= value <= max_wait_s:
        raise ApiError(400, "invalid_request", f"wait must be between 0 and {max_wait_s:g} seconds")
    return value


def _options(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ApiError(400, "invalid_request", "options must be an object")
    unknown = set(raw) - {
        "timeout_s",
        "max_body_bytes",
        "headers",
        "egress_pool",
        "session_id",
        "wait_until",
        "wait_for",
        "screenshot",
        "block_resources",
    }
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown options: {', '.join(sorted(unknown))}")
    timeout_s = raw.get("timeout_s")
    if timeout_s is not None and (
        not isinstance(timeout_s, int | float) or not 0 < timeout_s <= 300
    ):
        raise ApiError(400, "invalid_request", "options.timeout_s must be a number in (0, 300]")
    max_body = raw.get("max_body_bytes")
    if max_body is not None and (not isinstance(max_body, int) or max_body <= 0):
        raise ApiError(400, "invalid_request", "options.max_body_bytes must be a positive integer")
    headers = raw.get("headers") or {}
    if (
        not isinstance(headers, dict)
        or not all(
            isinstance(k, str) and isinstance(v, str) and "\n" not in k + v
            for k, v in headers.items()
        )
        or len(headers) > 50
    ):
        raise ApiError(400, "invalid_request", "options.headers must map up to 50 names to strings")
    return {
        "timeout_s": float(timeout_s) if timeout_s is not None else None,
        "max_body_bytes": max_body,
        "headers": headers,
        "wait_until": _choice(raw, "wait_until", WAIT_UNTIL),
        "wait_for": _short_str(raw, "wait_for"),
        "screenshot": _choice(raw, "screenshot", SCREENSHOT),
        "block_resources": _resources(raw),
        "session_id": _short_str(raw, "session_id"),
        "egress_pool": _short_str(raw, "egress_pool"),
    }


WAIT_UNTIL = ("load", "domcontentloaded", "networkidle")
SCREENSHOT = ("viewport", "full")
RESOURCES = ("image", "font", "media", "stylesheet")


def _choice(raw: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str | None:
    value = raw.get(name)
    if value is not None and value not in allowed:
        raise ApiError(
            400, "invalid_request", f"options.{name} must be one of {', '.join(allowed)}"
        )
    return value


def _resources(raw: dict[str, Any]) -> list[str]:
    value = raw.get("block_resources") or []
    if not isinstance(value, list) or any(v not in RESOURCES for v in value):
        raise ApiError(
            400, "invalid_request", f"options.block_resources is a list of {', '.join(RESOURCES)}"
        )
    return sorted(set(value))


def _short_str(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise ApiError(
            400, "invalid_request", f"options.{name} must be a string of 1-200 characters"
        )
    return value


def _accepted(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": job["job_id"],
        "status": "queued",
        "tier": job["tier"],
        "trace_id": job["trace_id"],
        "links": {
            "self": f"/v1/jobs/{job['job_id']}",
            "content": f"/v1/jobs/{job['job_id']}/content",
        },
    }


def _job_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
    out["tenant"] = out.pop("tenant_id")
    out["links"] = {
        "self": f"/v1/jobs/{row['job_id']}",
        "content": f"/v1/jobs/{row['job_id']}/content",
    }
    return out
