"""Small helpers for Faust agents that read raw bytes and decode with our codec."""

from __future__ import annotations

from typing import Any

import faust

from schemas.kafka import EventProducer, KafkaConfig
from streams.runtime.faust_eager import EagerTransport, yield_every

# Events an agent may take from its buffer before its stream yields to the event loop (Faust
# yields before every event; see faust_eager.py). A tier worker's window of max_in_flight
# jobs bounds what one turn can start anyway.
STREAM_YIELD_EVERY = 32


def raw_topic(app: faust.App, name: str) -> Any:
    """A topic whose keys and values reach the agent as the bytes on the wire (decoding is ours,
    so an undecodable value becomes a DLQ record instead of an agent crash)."""
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        internal=False,
    )


def event_headers(raw: Any) -> list[tuple[str, bytes]]:
    """Faust message headers (a dict or a list of pairs) as a list of (str, bytes) pairs."""
    if not raw:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), bytes(v) if v is not None else b"") for k, v in items]


async def dead_letter(
    producer: EventProducer, dlq_topic: str, msg: Any, reason: str, detail: str
) -> None:
    """A Faust message to the DLQ (EventProducer.dead_letter, with its headers normalised)."""
    await producer.dead_letter(dlq_topic, msg, reason, detail, event_headers(msg.headers))


def new_app(
    app_id: str,
    kafka: KafkaConfig,
    datadir: str,
    *,
    instance_id: str | None = None,
    session_timeout_s: float = 20.0,
    **settings: Any,
) -> faust.App:
    """A Faust app with our defaults: no web server (metrics have their own 127.0.0.1
    endpoint), no leader topic, topics never declared by Faust (``scrapifie topics`` creates
    them with explicit partitions), in-memory table store, read from the earliest offset.

    Faust reads its settings from un-prefixed environment variables too (``BROKER_URL``,
    ``CONSUMER_GROUP_INSTANCE_ID``...), ahead of the arguments given here; ``env={}`` turns
    that off so that only ``SCRAPIFIE_*`` settings configure our processes.

    Its consumer hands records to the agents eagerly, and its streams yield to the event loop
    every STREAM_YIELD_EVERY events instead of every event (see faust_eager.py)."""
    app = faust.App(
        app_id,
        env={},
        consumer_group_instance_id=instance_id,
        broker_session_timeout=session_timeout_s,
        broker=[f"kafka://{b.strip()}" for b in kafka.bootstrap.split(",")],
        datadir=datadir,
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        store="memory://",
        autodiscover=False,
        **settings,
    )
    app.transport = EagerTransport(app.conf.broker_consumer, app)
    yield_every(STREAM_YIELD_EVERY)
    return app
