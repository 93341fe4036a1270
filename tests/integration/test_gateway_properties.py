"""Property test of the gateway's job intake: for any JSON body (or bytes), the answer is 202 or
a 4xx JSON error, never a 5xx; and every accepted job's options, read back from Kafka, are a
fixed point of ``parse_options`` under the gateway's limits.

The gateway runs in-process (aiohttp's TestServer) on the real Kafka and PostgreSQL, under a
topic prefix of its own that no worker consumes: the generated URLs are never fetched.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from connectors.config import GatewayConfig
from connectors.db import migrate
from connectors.gateway import Gateway
from connectors.storage import LocalObjectStore
from schemas import default_codec
from schemas.kafka import KafkaConfig
from schemas.options import (
    FORBIDDEN_HEADERS,
    RESOURCE_TYPES,
    SCREENSHOT_MODES,
    WAIT_UNTIL,
    InvalidOptions,
    JobLimits,
    parse_options,
)
from schemas.records import FetchOptions, ScrapeRequest
from scrapifie.admin import add_tenant, ensure_topics
from scrapifie.local.kafka import LocalKafka
from scrapifie.local.postgres import LocalPostgres

pytestmark = pytest.mark.integration

LIMITS = JobLimits(max_body_bytes=1_000_000, max_timeout_s=60)
TIERS = ("http", "browser", "stealth")

# Any code point, lone surrogates included (json.dumps sends them as \udcxx escapes).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=30)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**60, max_value=2**70)
    | st.floats()
    | ANY_TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(ANY_TEXT, kids, max_size=4),
    max_leaves=10,
)
HEADER_NAMES = (
    st.sampled_from(
        [
            *("Accept", "User-Agent", "x-ok", "Content-Length", "Transfer-Encoding", "HOST", "TE"),
            *("X:Y", "Bad Name", "", "x" * 300, "Ünïcode"),
        ]
    )
    | ANY_TEXT
)
HEADER_VALUES = st.sampled_from(["v", "a\r\nb", "a\nb", "\x00", "tab\tok", "é"]) | ANY_TEXT
# Values each option accepts, and values meant to break it (with every valid one among them).
PRINTABLE = st.text(st.characters(min_codepoint=0x20, exclude_categories=("Cs", "Cc")), min_size=1)
VALID_OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "timeout_s": st.integers(1, 60) | st.floats(min_value=0.001, max_value=60),
    "max_body_bytes": st.integers(1, LIMITS.max_body_bytes),
    "headers": st.dictionaries(
        st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}", fullmatch=True).filter(
            lambda name: name.lower() not in FORBIDDEN_HEADERS
        ),
        st.text(st.characters(min_codepoint=0x20, exclude_categories=("Cs", "Cc")), max_size=20),
        max_size=3,
    ),
    "wait_until": st.sampled_from(WAIT_UNTIL),
    "wait_for": PRINTABLE.filter(lambda t: len(t) <= 200),
    "screenshot": st.sampled_from(SCREENSHOT_MODES),
    "block_resources": st.lists(st.sampled_from(RESOURCE_TYPES), max_size=5),
    "session_id": PRINTABLE.filter(lambda t: len(t) <= 200),
    "egress_pool": PRINTABLE.filter(lambda t: len(t) <= 200),
}
HOSTILE_OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    # At the deployment's caps, around them, and far past them.
    "timeout_s": st.sampled_from([LIMITS.max_timeout_s, LIMITS.max_timeout_s + 0.001, 0, -1])
    | st.floats()
    | JSON,
    "max_body_bytes": st.sampled_from([LIMITS.max_body_bytes, LIMITS.max_body_bytes + 1, 0])
    | st.integers(-5, 2 * LIMITS.max_body_bytes)
    | st.just(2**63)
    | JSON,
    "headers": st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4) | JSON,
    "wait_until": st.sampled_from(["load", "domcontentloaded", "networkidle", "Load"]) | JSON,
    "wait_for": ANY_TEXT | st.text(max_size=210) | JSON,
    "screenshot": st.sampled_from(["viewport", "full", "all"]) | JSON,
    "block_resources": st.lists(
        st.sampled_from(["image", "font", "media", "stylesheet", "script"]), max_size=5
    )
    | JSON,
    "session_id": ANY_TEXT | JSON,
    "egress_pool": ANY_TEXT | JSON,
}
OPTIONS = (
    st.fixed_dictionaries({}, optional=VALID_OPTIONS)
    | st.fixed_dictionaries({}, optional=VALID_OPTIONS).flatmap(
        lambda options: st.sampled_from(sorted(HOSTILE_OPTIONS)).flatmap(
            lambda name: HOSTILE_OPTIONS[name].map(lambda value: {**options, name: value})
        )
    )
    | st.fixed_dictionaries({}, optional=HOSTILE_OPTIONS)
    | st.builds(
        lambda o, k: {**o, k: 1}, st.fixed_dictionaries({}, optional=VALID_OPTIONS), ANY_TEXT
    )
    | JSON
)
VALID_JOB = st.fixed_dictionaries(
    {"url": st.sampled_from(["http://example.com/", "https://example.org/a?b=1"])},
    optional={
        "options": OPTIONS,
        "tier": st.sampled_from([*TIERS, "auto"]),
        "max_tier": st.sampled_from(TIERS),
        "job_id": st.uuids().map(str),
    },
)
URLS = (
    st.sampled_from(["http://example.com/", "https://example.org/a?b=1", "http://127.0.0.1:9/x"])
    | st.builds("http://example.com/{}".format, ANY_TEXT)
    | st.builds("http://{}/".format, ANY_TEXT)
    | JSON
)
ANY_JOB = st.fixed_dictionaries(
    {"url": URLS},
    optional={
        "options": OPTIONS,
        "tier": st.sampled_from([*TIERS, "auto", "quantum"]) | JSON,
        "max_tier": st.sampled_from([*TIERS, "auto"]) | JSON,
        "job_id": st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()) | JSON,
    },
)
AT_THE_CAPS = st.fixed_dictionaries(
    {
        "url": st.just("http://example.com/"),
        "options": st.fixed_dictionaries(
            {},
            optional={
                "max_body_bytes": st.sampled_from(
                    [LIMITS.max_body_bytes, LIMITS.max_body_bytes + 1]
                ),
                "timeout_s": st.sampled_from([LIMITS.max_timeout_s, LIMITS.max_timeout_s + 0.5]),
            },
        ),
    }
)
REQUESTS = (
    st.tuples(st.just("/v1/jobs"), VALID_JOB)
    | st.tuples(st.just("/v1/jobs"), AT_THE_CAPS)
    | st.tuples(st.just("/v1/jobs"), ANY_JOB | JSON)
    | st.tuples(
        st.just("/v1/jobs/batch"),
        st.fixed_dictionaries({"jobs": st.lists(VALID_JOB | ANY_JOB, max_size=4)}),
    )
    | st.tuples(st.just("/v1/jobs"), st.binary(max_size=64))
)


def _expected_options(raw: Any) -> FetchOptions:
    """What the gateway must have published for a job sent with ``raw`` options."""
    return parse_options(raw or {}, LIMITS)


async def test_any_body_gets_202_or_a_4xx_json_error(
    kafka: LocalKafka, postgres: LocalPostgres, tmp_path: Path
) -> None:
    cfg = KafkaConfig(bootstrap=kafka.bootstrap, topic_prefix=f"p{uuid.uuid4().hex[:8]}.")
    await ensure_topics(cfg)
    await migrate(postgres.dsn)
    api_key = await add_tenant(postgres.dsn, f"prop-{cfg.topic_prefix.rstrip('.')}", 10**9)
    gateway = Gateway(
        GatewayConfig(tiers=TIERS),
        cfg,
        postgres.dsn,
        LocalObjectStore(tmp_path / "objects"),
        CollectorRegistry(),
        LIMITS,
    )
    # (trace id, job id) -> the options each accepted job was sent with
    accepted: dict[tuple[str, str], list[Any]] = defaultdict(list)
    seen = {"requests": 0, "accepted": 0}

    async with TestServer(gateway.app(), host="127.0.0.1") as server:
        base = str(server.make_url("/"))

        def run() -> None:
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {api_key}"}, trust_env=False
            ) as client:

                @settings(
                    max_examples=300,
                    deadline=None,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                )
                @given(request=REQUESTS)
                def check(request: tuple[str, Any]) -> None:
                    path, body = request
                    data = body if isinstance(body, bytes) else json.dumps(body).encode()
                    trace = f"prop-{seen['requests']}"
                    seen["requests"] += 1
                    resp = client.post(path, content=data, headers={"X-Request-ID": trace})
                    assert resp.status_code in (202, 400, 413), (resp.status_code, resp.text, data)
                    assert resp.headers["content-type"].startswith("application/json")
                    if resp.status_code != 202:
                        error = resp.json()["error"]
                        assert error["code"] and error["message"], resp.text
                        return
                    items = body["jobs"] if path.endswith("batch") else [body]
                    answers = resp.json()["jobs"] if path.endswith("batch") else [resp.json()]
                    for item, answer in zip(items, answers, strict=True):
                        options = item.get("options")
                        try:
                            _expected_options(options)
                        except InvalidOptions as exc:
                            raise AssertionError(f"accepted invalid options {options!r}") from exc
                        accepted[(trace, answer["job_id"])].append(options)
                        seen["accepted"] += 1

                check()

        await asyncio.to_thread(run)

    assert seen["accepted"] > seen["requests"] // 5, seen  # the accepting path is well covered
    topics = [cfg.topics.requests, *(cfg.topics.tier(t) for t in TIERS)]
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=cfg.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[ScrapeRequest] = []
    try:
        async with asyncio.timeout(60):
            while len(records) < seen["accepted"]:
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    records += [default_codec().read_request(r.value) for r in batch]
    finally:
        await consumer.stop()
    assert len(records) == seen["accepted"]
    for record in records:
        options = record.options
        assert parse_options(options, LIMITS) == options  # re-validates, unchanged
        sent = accepted[(record.trace_id, record.job_id)]
        assert options in [_expected_options(raw) for raw in sent], (record, sent)
