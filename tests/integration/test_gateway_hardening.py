"""The gateway against hostile input, on the real stack (see conftest.py): every error is a JSON
body with a code and a message, never an unhandled 500; job ids are UUIDs on every path; stored
content is streamed (never inflated whole) and served so that it cannot run as the gateway's
origin; ``?wait=`` requests are woken by one LISTEN connection, not by polling the pool."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from schemas import content_object_key, screenshot_object_key
from tests.integration.conftest import Stack
from tests.integration.targets import TargetSite

pytestmark = pytest.mark.integration


async def _post(client: httpx.AsyncClient, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    """POST ``body`` as ASCII JSON: lone surrogates travel as their ``\\udcxx`` escapes (httpx's
    own ``json=`` encodes UTF-8, which cannot carry them)."""
    return await client.post(path, content=json.dumps(body).encode(), **kwargs)


def _error(resp: httpx.Response, status: int, code: str | None = None) -> str:
    """The message of a JSON error response with ``status`` (and ``code``)."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    error = resp.json()["error"]
    if code is not None:
        assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    return str(error["message"])


async def test_hostile_job_bodies_get_400_with_a_message(stack: Stack) -> None:
    ok = "http://example.com/"
    async with stack.client() as client:
        # Nested past Python's recursion limit: json.loads raises RecursionError.
        deep = b'{"url": "http://example.com/", "options": ' + b"[" * 100_000 + b"]" * 100_000
        _error(await client.post("/v1/jobs", content=deep + b"}"), 400, "invalid_json")
        _error(await client.post("/v1/jobs", content=b"[" * 200_000), 400, "invalid_json")
        # An integer past Python's 4,300-digit conversion limit (a ValueError, not a decode error).
        huge = b'{"url": "http://example.com/", "job_id": ' + b"9" * 5000 + b"}"
        _error(await client.post("/v1/jobs", content=huge), 400, "invalid_json")
        _error(await client.post("/v1/jobs", content=b"\xff\xfe{}"), 400, "invalid_json")
        # A lone surrogate, sent as the JSON escape (it is valid JSON, but not encodable text).
        lone = b'{"url": "http://example.com/\\udcff"}'
        _error(await client.post("/v1/jobs", content=lone), 400, "invalid_url")
        lone_host = b'{"url": "http://exa\\udcffmple.com/"}'
        _error(await client.post("/v1/jobs", content=lone_host), 400, "invalid_url")

        for options, fragment in [
            ({"max_body_bytes": 2**63}, "at most"),
            ({"max_body_bytes": 2**200}, "at most"),
            ({"max_body_bytes": True}, "positive integer"),
            ({"timeout_s": 1e308}, "timeout_s"),
            ({"headers": {"Content-Length": "5"}}, "Content-Length"),
            ({"headers": {"transfer-encoding": "chunked"}}, "transfer-encoding"),
            ({"headers": {"X:Y": "1"}}, "not a valid header name"),
            ({"headers": {"Bad Name": "1"}}, "not a valid header name"),
            ({"headers": {"X-Ok": "a\r\nX-Injected: 1"}}, "control characters"),
            ({"headers": {"X-Ok": "a\x00b"}}, "control characters"),
            ({"headers": {"X-Ok": "caf\udce9"}}, "control characters"),
            ({"wait_for": "#a\x00"}, "control characters"),
            ({"session_id": "x" * 201}, "1-200"),
            ({"block_resources": ["script"]}, "block_resources"),
            ({"colour": "blue"}, "unknown options"),
            ("fast", "options must be an object"),
        ]:
            resp = await _post(client, "/v1/jobs", {"url": ok, "options": options})
            assert fragment in _error(resp, 400, "invalid_request"), (options, resp.text)

        for body, code in [
            ({"url": ok, "tier": ["http"]}, "invalid_tier"),
            ({"url": ok, "max_tier": {"a": 1}}, "invalid_request"),
            ({"url": ok, "job_id": "not-a-uuid"}, "invalid_request"),
            ({"url": ok, "job_id": True}, "invalid_request"),
            ({"url": 42}, "invalid_url"),
        ]:
            _error(await client.post("/v1/jobs", json=body), 400, code)
        long_tier = {"url": ok, "tier": "x" * 100_000}
        assert len(_error(await client.post("/v1/jobs", json=long_tier), 400)) < 500  # no echo

        batch = {"jobs": [{"url": ok}, {"url": ok, "options": {"headers": {"Host": "x"}}}]}
        assert "jobs[1]" in _error(await client.post("/v1/jobs/batch", json=batch), 400)
        # A bad ?wait= is refused before the job is published (a 400 means not accepted).
        job_id = str(uuid.uuid4())
        resp = await client.post(
            "/v1/jobs", params={"wait": "soon"}, json={"url": ok, "job_id": job_id}
        )
        _error(resp, 400, "invalid_request")
        _error(await client.get(f"/v1/jobs/{job_id}"), 404, "not_found")


async def test_odd_headers_ids_routes_and_methods_get_json_errors(stack: Stack) -> None:
    async with stack.client() as client:
        # Non-UTF-8 header bytes reach aiohttp as lone surrogates: refused, not a 500.
        resp = await client.get("/v1/usage", headers={"X-Request-ID": b"caf\xe9"})
        assert "X-Request-ID" in _error(resp, 400, "invalid_request")
        resp = await client.get("/v1/usage", headers={"Authorization": b"Bearer \xff\xfe"})
        _error(resp, 401, "unauthorized")
        resp = await client.get("/v1/usage", headers={"X-Request-ID": "t" * 300})
        assert resp.status_code == 200 and resp.headers["x-request-id"] == "t" * 128

        for path in ["/v1/jobs/not-a-uuid", "/v1/jobs/1/content", "/v1/jobs/%00/screenshot"]:
            _error(await client.get(path), 404, "not_found")
        # A UUID in any spelling names the same job (canonical lower case).
        job_id = str(uuid.uuid4())
        resp = await client.post("/v1/jobs", json={"url": "http://example.com/", "job_id": job_id})
        assert resp.status_code == 202, resp.text
        for spelling in (job_id.upper(), job_id.replace("-", ""), f"urn:uuid:{job_id}"):
            resp = await client.get(f"/v1/jobs/{spelling}")
            assert resp.status_code == 200 and resp.json()["job_id"] == job_id, resp.text

        _error(await client.get("/v1/nothing-here"), 404, "not_found")
        _error(await client.get("/nothing-here"), 404, "not_found")
        resp = await client.delete(f"/v1/jobs/{job_id}")
        _error(resp, 405, "method_not_allowed")
        assert "GET" in resp.headers["allow"]
        _error(await client.put("/healthz"), 405, "method_not_allowed")

        metrics = (await client.get("/metrics")).text
        assert re.search(
            r'scrapifie_gateway_errors_total\{code="invalid_request",route="/v1/usage"\} [1-9]',
            metrics,
        ), metrics
        assert 'code="not_found"' in metrics and 'code="method_not_allowed"' in metrics


async def _stored_job(
    stack: Stack,
    *,
    content: bytes | None = None,
    screenshot: bytes | None = None,
    content_type: str = "text/html; charset=utf-8",
) -> str:
    """A succeeded job row of the stack's tenant whose objects are ``content`` (stored as is,
    so gzipped by the caller) and ``screenshot``, as the results sink would leave them."""
    job_id = str(uuid.uuid4())
    s3 = stack.s3.client()
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        await asyncio.to_thread(s3.create_bucket, Bucket=stack.s3.bucket)
    content_key = screenshot_key = None
    if content is not None:
        content_key = content_object_key(stack.tenant, job_id)
        await asyncio.to_thread(
            s3.put_object, Bucket=stack.s3.bucket, Key=content_key, Body=content
        )
    if screenshot is not None:
        screenshot_key = screenshot_object_key(stack.tenant, job_id)
        await asyncio.to_thread(
            s3.put_object, Bucket=stack.s3.bucket, Key=screenshot_key, Body=screenshot
        )
    async with await psycopg.AsyncConnection.connect(stack.dsn) as conn:
        await conn.execute(
            "INSERT INTO jobs (tenant_id, job_id, url, status, content_type, content_key,"
            " screenshot_key, created_at) VALUES (%s, %s, %s, 'succeeded', %s, %s, %s, %s)",
            (
                stack.tenant,
                job_id,
                "http://example.com/",
                content_type,
                content_key,
                screenshot_key,
                datetime.now(UTC),
            ),
        )
    return job_id


def _served_safely(resp: httpx.Response) -> None:
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["content-security-policy"] == "sandbox"


async def test_highly_compressible_content_is_streamed(stack: Stack) -> None:
    body = b"<html>" + b"\x00" * (64 * 1024 * 1024) + b"</html>"  # 64 MiB in ~64 KB of gzip
    stored = gzip.compress(body, compresslevel=9)
    assert len(stored) < len(body) // 500
    job_id = await _stored_job(stack, content=stored)
    async with stack.client() as client:
        digest, size = hashlib.sha256(), 0
        async with client.stream(
            "GET", f"/v1/jobs/{job_id}/content", headers={"Accept-Encoding": "identity"}
        ) as resp:
            assert resp.status_code == 200
            assert resp.headers["transfer-encoding"] == "chunked"  # streamed, not one buffer
            assert "content-encoding" not in resp.headers
            assert resp.headers["content-type"] == "text/html; charset=utf-8"
            _served_safely(resp)
            async for piece in resp.aiter_raw():
                digest.update(piece)
                size += len(piece)
        assert (size, digest.hexdigest()) == (len(body), hashlib.sha256(body).hexdigest())

        # A client that takes gzip gets the stored bytes as they are.
        async with client.stream(
            "GET", f"/v1/jobs/{job_id}/content", headers={"Accept-Encoding": "br, gzip"}
        ) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-encoding"] == "gzip"
            assert "accept-encoding" in resp.headers["vary"].lower()
            _served_safely(resp)
            assert b"".join([p async for p in resp.aiter_raw()]) == stored
        # ... and one that refuses it explicitly does not.
        async with client.stream(
            "GET", f"/v1/jobs/{job_id}/content", headers={"Accept-Encoding": "gzip;q=0"}
        ) as resp:
            assert "content-encoding" not in resp.headers
            assert sum([len(p) async for p in resp.aiter_raw()]) == len(body)

        # The gateway answered other requests meanwhile and is still healthy.
        assert (await client.get("/healthz")).status_code == 200


async def test_stored_objects_cannot_run_as_the_gateways_origin(stack: Stack) -> None:
    page = b"<script>fetch('/v1/usage')</script>"
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    job_id = await _stored_job(
        stack, content=gzip.compress(page), screenshot=png, content_type="text/html\r\nX-Evil: 1"
    )
    async with stack.client() as client:
        resp = await client.get(f"/v1/jobs/{job_id}/content")
        assert resp.status_code == 200 and resp.content == page
        assert resp.headers["content-type"] == "application/octet-stream"  # not a header line
        assert "x-evil" not in resp.headers
        _served_safely(resp)
        resp = await client.get(f"/v1/jobs/{job_id}/screenshot")
        assert resp.status_code == 200 and resp.content == png
        assert resp.headers["content-type"] == "image/png"
        _served_safely(resp)


async def test_a_defect_answers_500_in_json_with_the_trace_id(stack: Stack) -> None:
    """A corrupt stored object is the gateway's problem, not the client's: 500 ``internal``,
    in the JSON format, naming the trace id the log line carries."""
    job_id = await _stored_job(stack, content=b"this is not gzip")
    async with stack.client() as client:
        resp = await client.get(
            f"/v1/jobs/{job_id}/content",
            headers={"Accept-Encoding": "identity", "X-Request-ID": "trace-corrupt"},
        )
        assert "trace-corrupt" in _error(resp, 500, "internal")
        assert resp.headers["x-request-id"] == "trace-corrupt"
        # Truncated after the first step: the status line is out, so the body is cut short and
        # the client sees an incomplete response, never a complete wrong one.
        whole = gzip.compress(bytes(range(256)) * 40_000)
        job_id = await _stored_job(stack, content=whole[: len(whole) // 2])
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"/v1/jobs/{job_id}/content", headers={"Accept-Encoding": "identity"})
        assert (await client.get("/healthz")).status_code == 200
    assert "unhandled error in GET /v1/jobs/{job_id}/content (trace id trace-corrupt)" in (
        stack.logs / "gateway.log"
    ).read_text(errors="replace")


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


async def test_fifty_waits_share_one_listener(stack: Stack, target: TargetSite) -> None:
    """More waiters than the gateway's 16 pooled connections, each on a job that takes ~5 s:
    all of them end 200 with their final job."""
    tag = uuid.uuid4().hex[:8]
    async with stack.client() as client:
        client.timeout = httpx.Timeout(60)

        async def wait(i: int) -> dict[str, Any]:
            resp = await client.post(
                "/v1/jobs", params={"wait": 40}, json={"url": f"{target.base}/hang/{tag}-{i}"}
            )
            assert resp.status_code == 200, resp.text
            return dict(resp.json())

        waits = [asyncio.create_task(wait(i)) for i in range(50)]
        await asyncio.sleep(2)
        metrics = (await client.get("/metrics")).text
        assert _metric(metrics, "scrapifie_gateway_waiting_requests") == 50
        jobs = await asyncio.gather(*waits)
        assert {j["status"] for j in jobs} == {"succeeded"}
        assert {j["url"] for j in jobs} == {f"{target.base}/hang/{tag}-{i}" for i in range(50)}
        metrics = (await client.get("/metrics")).text
        assert _metric(metrics, "scrapifie_gateway_waiting_requests") == 0


async def test_waiters_survive_the_listener_connection_dropping(
    stack: Stack, target: TargetSite
) -> None:
    tag = uuid.uuid4().hex[:8]
    async with stack.client() as client:
        client.timeout = httpx.Timeout(60)
        before = _metric(
            (await client.get("/metrics")).text, "scrapifie_gateway_listener_connects_total"
        )

        async def wait(i: int) -> httpx.Response:
            return await client.post(
                "/v1/jobs", params={"wait": 40}, json={"url": f"{target.base}/hang/{tag}-{i}"}
            )

        waits = [asyncio.create_task(wait(i)) for i in range(10)]
        await asyncio.sleep(1.5)
        async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'scrapifie-gateway-listener'"
            )
            assert (await cur.fetchone()) is not None
        responses = await asyncio.gather(*waits)
        assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
        assert {r.json()["status"] for r in responses} == {"succeeded"}
        after = _metric(
            (await client.get("/metrics")).text, "scrapifie_gateway_listener_connects_total"
        )
        assert after > before


async def test_wait_returns_202_when_the_job_is_not_done_in_time(
    stack: Stack, target: TargetSite
) -> None:
    async with stack.client() as client:
        resp = await client.post(
            "/v1/jobs",
            params={"wait": 0.5},
            json={"url": f"{target.base}/hang/short-{uuid.uuid4()}"},
        )
        assert resp.status_code == 202 and resp.json()["status"] == "queued", resp.text
        for wait in ("1e9", "nan", "-1", "inf"):
            resp = await client.post(
                "/v1/jobs", params={"wait": wait}, json={"url": "http://example.com/"}
            )
            _error(resp, 400, "invalid_request")
