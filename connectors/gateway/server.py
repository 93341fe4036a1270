"""The HTTP ingest gateway: accepts jobs from people and publishes them to Kafka.

Writes go to Kafka only (the sinks own PostgreSQL), so the gateway keeps accepting jobs while
PostgreSQL is down; reads come from PostgreSQL and answer 503 while it is down. Every error the
gateway answers, unknown routes and its own defects (500 ``internal``, logged with the trace id)
included, has the body ``{"error": {"code": ..., "message": <what to fix>}}`` and is counted in
``scrapifie_gateway_errors_total{route,code}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from connectors.config import GatewayConfig
from connectors.gateway.accounts import AdmissionLimits
from connectors.gateway.api import (
    ApiError,
    accepted,
    error_response,
    json_body,
    request_trace_id,
    wait_param,
)
from connectors.gateway.auth import KEY_SQL, Authenticator
from connectors.gateway.content import SAFE_HEADERS, inline_formats, send_format
from connectors.gateway.intake import Intake
from connectors.gateway.openapi import build_openapi
from connectors.gateway.usage import UnknownTenant, parse_usage_query, read_usage
from connectors.gateway.views import HISTORY_SQL, job_view
from connectors.gateway.waiters import JobListener, Waiters, wait_final
from connectors.storage import ObjectStore, StorageError
from schemas import default_codec
from schemas.kafka import EventProducer, KafkaConfig
from schemas.options import DEFAULT_LIMITS, JobLimits
from schemas.prices import DEFAULT_PRICES, Prices
from schemas.records import FINAL_STATUSES

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TENANT: web.RequestKey[str] = web.RequestKey("tenant", str)
TRACE: web.RequestKey[str] = web.RequestKey("trace_id", str)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        kafka: KafkaConfig,
        dsn: str,
        store: ObjectStore,
        registry: CollectorRegistry,
        limits: JobLimits = DEFAULT_LIMITS,
        prices: Prices = DEFAULT_PRICES,
    ) -> None:
        self._config = config
        self._kafka = kafka
        self._dsn = dsn
        self._store = store
        self._registry = registry
        self._limits = limits
        self._waiters = Waiters()
        self._intake = Intake(
            config,
            kafka,
            limits,
            AdmissionLimits(config.rate_per_s, config.max_jobs, prices),
            registry,
            producer=lambda: self._producer,
            pool=lambda: self._pool,
        )
        self._openapi = build_openapi(limits, config.tiers, config.max_batch, config.max_wait_s)
        self._codec = default_codec()
        self._auth = Authenticator(lambda digest: self._fetchone(KEY_SQL, digest))
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
        self._errors = Counter(
            "scrapifie_gateway_errors_total",
            "Error responses, by route and error code (internal: a defect, logged).",
            ["route", "code"],
            registry=registry,
        )
        self._listener_connects = Counter(
            "scrapifie_gateway_listener_connects_total",
            "Connections of the job listener that wakes ?wait= requests (1 + reconnections).",
            registry=registry,
        )
        Gauge(
            "scrapifie_gateway_waiting_requests",
            "Requests waiting (?wait=) for their job to finish.",
            registry=registry,
        ).set_function(lambda: len(self._waiters))

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
        try:
            async with (
                JobListener(self._dsn, self._waiters, on_connect=self._listener_connects.inc),
                EventProducer(self._kafka, "gateway") as producer,
            ):
                self._producer = producer
                try:
                    yield
                finally:
                    self._producer = None
        finally:
            await self._pool.close()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource else "?"
        request[TRACE] = uuid.uuid4().hex
        started = time.monotonic()
        try:
            request[TRACE] = request_trace_id(request.headers.get("X-Request-ID"), request[TRACE])
            if request.path.startswith("/v1/"):
                request[TENANT] = await self._auth.tenant(request.headers.get("Authorization"))
            resp = await handler(request)
        except ApiError as exc:
            resp = self._error(route, exc.status, exc.code, exc.message, exc.headers)
        except web.HTTPRequestEntityTooLarge:
            resp = self._error(
                route, 413, "too_large", f"request body over {self._config.max_body_bytes} bytes"
            )
        except web.HTTPException as exc:
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            code = _HTTP_CODES.get(exc.status, "http_error")
            resp = self._error(route, exc.status, code, f"{exc.reason}: {request.path}", allow)
        except Exception:
            trace_id = request[TRACE]
            log.exception(
                "unhandled error in %s %s (trace id %s)",
                request.method,
                route,
                trace_id,
                extra={"trace_id": trace_id},
            )
            resp = self._error(
                route,
                500,
                "internal",
                f"an internal error; it was logged with trace id {request[TRACE]}",
            )
        if not resp.prepared:
            resp.headers["X-Request-ID"] = request[TRACE]
        self._requests.labels(route, str(resp.status)).inc()
        self._latency.labels(route).observe(time.monotonic() - started)
        return resp

    def _error(
        self,
        route: str,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        self._errors.labels(route, code).inc()
        return error_response(status, code, message, headers)

    async def _fetchone(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = await self._query(sql, args, one=True)
        return rows[0] if rows else None

    async def _fetchall(self, sql: str, params: Any) -> list[dict[str, Any]]:
        return await self._query(sql, params, one=False)

    async def _query(self, sql: str, params: Any, one: bool) -> list[dict[str, Any]]:
        """Rows of ``sql`` (503 while the database is away)."""
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(sql, params)
                if one:
                    row = await cur.fetchone()
                    return [] if row is None else [row]
                return await cur.fetchall()
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
        body = await json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", "body must be a JSON object with at least 'url'")
        job = self._intake.build(body, request[TENANT], request[TRACE])
        wait_s = wait_param(request, self._config.max_wait_s)  # a 400 must mean not accepted
        inline = _flag(request, "inline")
        await self._intake.submit(request[TENANT], [job])
        if wait_s:
            job_id, tenant = job.job_id, request[TENANT]
            row = await wait_final(
                self._waiters, job_id, wait_s, lambda: self._job_row(job_id, tenant)
            )
            if row is not None:
                view = await self._view(row)
                if inline:
                    view["inline"] = await inline_formats(row, self._store)
                return web.json_response(view, status=200, headers=_charged(row))
        return web.json_response(accepted(job), status=202)

    async def post_batch(self, request: web.Request) -> web.Response:
        body = await json_body(request)
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
                jobs.append(self._intake.build(item, request[TENANT], request[TRACE]))
            except ApiError as exc:
                raise ApiError(exc.status, exc.code, f"jobs[{i}]: {exc.message}") from exc
        await self._intake.submit(request[TENANT], jobs)
        return web.json_response({"jobs": [accepted(j) for j in jobs]}, status=202)

    async def _job_row(self, job_id: str, tenant: str) -> dict[str, Any] | None:
        return await self._fetchone(
            "SELECT * FROM jobs WHERE job_id = %s AND tenant_id = %s", job_id, tenant
        )

    async def _requested_job(self, request: web.Request) -> dict[str, Any]:
        """The row of the job the path names, if it is the caller's (404 otherwise)."""
        try:
            job_id = str(uuid.UUID(request.match_info["job_id"]))
        except ValueError:
            job_id = None  # job ids are UUIDs: no such job
        row = None if job_id is None else await self._job_row(job_id, request[TENANT])
        if row is None:
            raise ApiError(404, "not_found", "no such job for this API key")
        return row

    async def get_job(self, request: web.Request) -> web.Response:
        row = await self._requested_job(request)
        return web.json_response(await self._view(row), headers=_charged(row))

    async def _view(self, row: dict[str, Any]) -> dict[str, Any]:
        """The job's JSON: its row and its story (attempts and escalations, in order)."""
        history = await self._fetchall(
            HISTORY_SQL, {"tenant": row["tenant_id"], "job_id": row["job_id"]}
        )
        return job_view(row, history).to_json()

    async def get_content(self, request: web.Request) -> web.StreamResponse:
        row = await self._requested_job(request)
        fmt = request.query.get("format")
        return await send_format(request, row, fmt, self._store, request[TRACE])

    async def get_screenshot(self, request: web.Request) -> web.Response:
        _row, data = await self._stored(
            request,
            "screenshot_key",
            "no_screenshot",
            lambda _r: "no screenshot: ask for options.screenshot on a browser tier",
        )
        return web.Response(body=data, headers={"Content-Type": "image/png", **SAFE_HEADERS})

    async def _stored(
        self,
        request: web.Request,
        key_column: str,
        code: str,
        missing: Callable[[dict[str, Any]], str],
    ) -> tuple[dict[str, Any], bytes]:
        """The caller's job row and the object its ``key_column`` names (404/503 otherwise)."""
        row = await self._requested_job(request)
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
        try:
            q = parse_usage_query(request.query)
        except ValueError as exc:
            raise ApiError(400, "invalid_request", str(exc)) from exc
        assert self._pool is not None
        try:
            async with asyncio.timeout(10), self._pool.connection() as conn:
                body = await read_usage(
                    conn, request[TENANT], start=q.start, end=q.end, group_by=q.group_by
                )
        except UnknownTenant as exc:
            raise ApiError(401, "unauthorized", "unknown tenant") from exc
        except (psycopg.Error, TimeoutError) as exc:
            raise ApiError(
                503,
                "unavailable",
                "the job database is unavailable; retry shortly",
                {"Retry-After": "5"},
            ) from exc
        return web.json_response(body)

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
            raise ApiError(503, "not_ready", "; ".join(problems))
        return web.json_response({"status": "ready"})

    async def metrics(self, _request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self._registry))
        resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return resp

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(self._openapi)


def _charged(row: dict[str, Any]) -> dict[str, str]:
    """``X-Credits-Charged`` for a job that has ended: what it cost."""
    if row.get("status") in FINAL_STATUSES and row.get("credits") is not None:
        return {"X-Credits-Charged": str(row["credits"])}
    return {}


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(400, "invalid_request", f"{name} must be true or false")
    return value in ("true", "1")
