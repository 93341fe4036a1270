"""Operational helpers used by the CLI and tests: topics, migrations, tenants."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets

import psycopg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.kafka import KafkaConfig

log = logging.getLogger(__name__)


async def ensure_topics(kafka: KafkaConfig, replication: int = 1) -> list[str]:
    """Create every topic of schemas.topics that is missing; return the names created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap, client_id=f"{kafka.client_id}-admin"
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, spec.partitions, replication, topic_configs=dict(spec.config))
            for name, spec in kafka.topics.all()
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process was first
                await admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def ensure_topic(
    kafka: KafkaConfig, name: str, partitions: int, config: dict[str, str], replication: int = 1
) -> bool:
    """Create one topic if missing (e.g. a Faust table's changelog); True if created now."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap, client_id=f"{kafka.client_id}-admin"
    )
    await admin.start()
    try:
        if name in set(await admin.list_topics()):
            return False
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [NewTopic(name, partitions, replication, topic_configs=config)]
            )
        return True
    finally:
        await admin.close()


async def list_topics(kafka: KafkaConfig) -> dict[str, int]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap, client_id=f"{kafka.client_id}-admin"
    )
    await admin.start()
    try:
        names = [name for name, _ in kafka.topics.all()]
        present = set(await admin.list_topics())
        described = await admin.describe_topics([n for n in names if n in present])
        counts = {d["topic"]: len(d["partitions"]) for d in described}
        return {n: counts.get(n, 0) for n in names}
    finally:
        await admin.close()


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


async def add_tenant(dsn: str, tenant: str, credits: int, api_key: str | None = None) -> str:
    """Create (or re-key) a tenant; returns its API key. Only the key's hash is stored."""
    key = api_key or f"sk_{secrets.token_urlsafe(24)}"
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await conn.execute(
            "INSERT INTO tenants (tenant_id, api_key_sha256, credits) VALUES (%s, %s, %s)"
            " ON CONFLICT (tenant_id) DO UPDATE SET api_key_sha256 = EXCLUDED.api_key_sha256",
            (tenant, hash_key(key), credits),
        )
    return key


async def list_tenants(dsn: str) -> list[tuple[str, int]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT tenant_id, credits FROM tenants ORDER BY tenant_id")
        return [(r[0], int(r[1])) for r in await cur.fetchall()]
