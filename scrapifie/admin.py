"""Operational helpers used by the CLI and tests: topics, migrations, tenants."""

from __future__ import annotations

import contextlib
import logging

import psycopg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.kafka import KafkaConfig
from scrapifie import accounts
from scrapifie.accounts import hash_key

__all__ = ["add_tenant", "ensure_topic", "ensure_topics", "hash_key", "list_tenants", "list_topics"]

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


async def add_tenant(dsn: str, tenant: str, credits: int, api_key: str | None = None) -> str:
    """Create ``tenant`` with ``credits`` if it does not exist (an existing tenant keeps its
    balance and settings), and give it a key: ``api_key`` or a new random one; returns the key.
    The tenant's other keys stay valid. Only the key's hash is stored."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        created = await accounts.create_tenant(conn, tenant, credits)
        label = "first key" if created else None
        _key_id, key = await accounts.add_key(conn, tenant, label, api_key)
    return key


async def list_tenants(dsn: str) -> list[tuple[str, int]]:
    """``(tenant, credits)`` of every tenant, by name."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return [(t.tenant_id, t.credits) for t in await accounts.tenants(conn)]
