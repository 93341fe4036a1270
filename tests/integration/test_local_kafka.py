"""LocalKafka starts a real KRaft broker that survives a stop/start on the same storage."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from scrapifie.local.kafka import LocalKafka, LocalKafkaError
from scrapifie.local.ports import free_port

POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
TOPIC = "scrapifie.test.local-kafka"
MESSAGES = 10

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("java") is None or shutil.which("mvn") is None,
        reason="needs java and mvn on PATH",
    ),
]


async def _create_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        response = await admin.create_topics(
            [NewTopic(name=TOPIC, num_partitions=2, replication_factor=1)]
        )
        errors = [(t[0], t[1]) for t in response.topic_errors if t[1] != 0]
        assert errors == []
    finally:
        await admin.close()


async def _describe_topic(bootstrap: str) -> tuple[list[str], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        topics = await admin.list_topics()
        (described,) = await admin.describe_topics([TOPIC])
        return topics, len(described["partitions"])
    finally:
        await admin.close()


async def _produce(bootstrap: str) -> set[int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    partitions: set[int] = set()
    try:
        await producer.start()
        for i in range(MESSAGES):
            meta = await producer.send_and_wait(
                TOPIC, key=f"key-{i}".encode(), value=f"value-{i}".encode()
            )
            partitions.add(meta.partition)
    finally:
        await producer.stop()
    return partitions


async def _consume(bootstrap: str, group: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    values: list[bytes] = []
    try:
        await consumer.start()
        deadline = time.monotonic() + 60
        while len(values) < MESSAGES and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                values.extend(r.value for r in records if r.value is not None)
        await consumer.commit()
    finally:
        await consumer.stop()
    return values


def test_local_kafka_round_trip_and_restart(tmp_path: Path) -> None:
    kafka = LocalKafka(
        data_dir=tmp_path / "kafka",
        port=free_port(),
        controller_port=free_port(),
        pom=POM,
        log_file=tmp_path / "kafka.log",
    )
    expected = sorted(f"value-{i}".encode() for i in range(MESSAGES))
    try:
        kafka.start(timeout_s=180)
        assert kafka.running
        assert kafka.bootstrap == f"127.0.0.1:{kafka.port}"

        asyncio.run(_create_topic(kafka.bootstrap))
        partitions = asyncio.run(_produce(kafka.bootstrap))
        assert partitions <= {0, 1}
        assert sorted(asyncio.run(_consume(kafka.bootstrap, "g1"))) == expected

        pid = kafka.pid
        assert pid is not None
        kafka.stop()
        assert not kafka.running
        assert not Path(f"/proc/{pid}").exists()

        kafka.start(timeout_s=180)  # same storage: no re-format, topic and records survive
        topics, n_partitions = asyncio.run(_describe_topic(kafka.bootstrap))
        assert TOPIC in topics
        assert n_partitions == 2
        assert sorted(asyncio.run(_consume(kafka.bootstrap, "g2"))) == expected
    finally:
        kafka.stop()
    assert not kafka.running


# Stands in for a broker JVM left running by a killed `scrapifie up`: named java, listening on
# the broker port, with server.properties on its command line (argv[2]).
_FAKE_BROKER = """
import socket, sys, time
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
print("ready", flush=True)
time.sleep(300)
"""


def _fake_broker(tmp_path: Path, kafka: LocalKafka, cwd: Path) -> subprocess.Popen[str]:
    java = tmp_path / "bin" / "java"  # /proc/<pid>/comm is the executable's file name
    java.parent.mkdir(exist_ok=True)
    java.symlink_to(sys.executable)
    kafka.data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [str(java), "-c", _FAKE_BROKER, str(kafka.port), str(kafka.properties_file)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline().strip() == "ready"
    (kafka.data_dir / "kafka.pid").write_text(f"{proc.pid}\n")
    return proc


def test_start_stops_the_broker_a_killed_process_left_running(tmp_path: Path) -> None:
    kafka = LocalKafka(
        data_dir=tmp_path / "kafka", port=free_port(), controller_port=free_port(), pom=POM
    )
    left = _fake_broker(tmp_path, kafka, cwd=kafka.data_dir)
    try:
        kafka.start(timeout_s=180)
        assert left.wait(5) == -signal.SIGTERM
        assert kafka.running
        assert (kafka.data_dir / "kafka.pid").read_text() == f"{kafka.pid}\n"
    finally:
        kafka.stop()
        if left.poll() is None:
            left.kill()
            left.wait()


def test_start_leaves_a_process_that_is_not_its_broker_alone(tmp_path: Path) -> None:
    kafka = LocalKafka(
        data_dir=tmp_path / "kafka", port=free_port(), controller_port=free_port(), pom=POM
    )
    # The pid file names a java process on our port, but one working elsewhere: not ours.
    other = _fake_broker(tmp_path, kafka, cwd=tmp_path)
    try:
        with pytest.raises(LocalKafkaError, match="already accepts connections"):
            kafka.start(timeout_s=30)
        assert other.poll() is None
        assert not kafka.running
    finally:
        other.kill()
        other.wait()
