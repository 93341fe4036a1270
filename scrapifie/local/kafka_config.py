"""What the local Kafka broker needs before it starts: its classpath, ``server.properties`` and
formatted storage.

The broker jars are resolved by Maven from ``deploy/kafka/pom.xml``; nothing is built. The
classpath Maven prints is cached beside the broker's data, keyed by the pom's content.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

from scrapifie.local.errors import LocalKafkaError
from scrapifie.local.server import tail_lines

__all__ = [
    "RESERVED_PROPERTIES",
    "format_storage",
    "random_cluster_id",
    "require_executable",
    "resolve_classpath",
    "server_properties",
    "write_server_properties",
]

log = logging.getLogger(__name__)

_MVN_TIMEOUT_S = 900.0
_FORMAT_TIMEOUT_S = 120.0
# server.properties keys the runner itself relies on (storage location, identity, listeners).
RESERVED_PROPERTIES = frozenset(
    {
        "process.roles",
        "node.id",
        "controller.quorum.voters",
        "controller.quorum.bootstrap.servers",
        "listeners",
        "advertised.listeners",
        "controller.listener.names",
        "log.dirs",
        "log.dir",
        "metadata.log.dir",
    }
)


def require_executable(name: str, hint: str) -> str:
    """The path of program ``name`` on PATH.

    Raises:
        LocalKafkaError: it is missing; the message ends with ``hint`` (how to install it).
    """
    path = shutil.which(name)
    if path is None:
        raise LocalKafkaError(f"{name!r} not found on PATH; {hint}")
    return path


def resolve_classpath(pom: Path, cache_dir: Path) -> str:
    """The broker classpath, from the cache keyed by the pom's sha256, else from Maven.

    Maven runs only when no classpath is cached in ``cache_dir`` for the current pom content or
    a cached jar has disappeared from the local repository; older caches are then removed.

    Raises:
        LocalKafkaError: the pom is unreadable, mvn is missing, failed or timed out.
    """
    try:
        pom_bytes = pom.read_bytes()
    except OSError as exc:
        raise LocalKafkaError(f"cannot read Kafka pom {pom}: {exc}") from exc
    digest = hashlib.sha256(pom_bytes).hexdigest()
    cache = cache_dir / f"classpath-{digest}.txt"
    if cache.is_file():
        classpath = cache.read_text().strip()
        missing = [p for p in classpath.split(os.pathsep) if p and not Path(p).exists()]
        if classpath and not missing:
            return classpath
        log.info(
            "cached classpath %s is stale (%d missing jars); re-resolving", cache, len(missing)
        )

    mvn = require_executable("mvn", "install Apache Maven (e.g. apt-get install maven)")
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:build-classpath",
        f"-Dmdep.outputFile={tmp}",
    ]
    log.info("resolving Kafka classpath with Maven (%s)", pom)
    try:
        result = subprocess.run(
            cmd,
            cwd=pom.parent,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_MVN_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(f"mvn timed out after {_MVN_TIMEOUT_S:.0f}s: {cmd}") from exc
    if result.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise LocalKafkaError(
            f"mvn failed with exit code {result.returncode}: {' '.join(cmd)}\n"
            + tail_lines(result.stdout + result.stderr)
        )
    classpath = tmp.read_text().strip()
    if not classpath:
        tmp.unlink(missing_ok=True)
        raise LocalKafkaError(f"mvn produced an empty classpath for {pom}")
    for old in cache_dir.glob("classpath-*.txt"):
        old.unlink(missing_ok=True)
    tmp.replace(cache)
    return classpath


def server_properties(
    *,
    port: int,
    controller_port: int,
    log_dir: Path,
    num_partitions: int,
    message_max_bytes: int,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """``server.properties`` of a single-node KRaft broker+controller on 127.0.0.1.

    ``extra`` entries override the generated ones; the caller keeps ``RESERVED_PROPERTIES``
    out of it.
    """
    listeners = f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": listeners,
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": str(num_partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "message.max.bytes": str(message_max_bytes),
        "replica.fetch.max.bytes": str(message_max_bytes),
    }
    props.update(extra)
    return props


def write_server_properties(path: Path, props: Mapping[str, str]) -> None:
    """Replace ``path`` atomically with ``props``, one ``key=value`` a line."""
    lines = ["# Written by scrapifie.local.kafka.LocalKafka on every start; edits are lost."]
    lines += [f"{key}={value}" for key, value in props.items()]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def format_storage(
    *,
    java: str,
    classpath: str,
    log4j_config: Path,
    properties_file: Path,
    log_dir: Path,
    data_dir: Path,
) -> None:
    """Format ``log_dir`` once, with a cluster id persisted in ``data_dir/cluster.id``.

    Skipped when ``log_dir/meta.properties`` exists, so a broker started again on the same
    storage keeps its cluster id, topics and data.

    Raises:
        LocalKafkaError: ``kafka.tools.StorageTool format`` failed or timed out.
    """
    if (log_dir / "meta.properties").is_file():
        return
    id_file = data_dir / "cluster.id"
    cluster_id = id_file.read_text().strip() if id_file.is_file() else ""
    if not cluster_id:
        cluster_id = random_cluster_id()
        id_file.write_text(cluster_id + "\n")
    # With a static controller.quorum.voters, format takes no quorum flag: --standalone,
    # --initial-controllers and --no-initial-controllers all require the voters to be unset.
    cmd = [
        java,
        "-Xmx256m",
        f"-Dlog4j2.configurationFile={log4j_config}",
        "-cp",
        classpath,
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        cluster_id,
        "--config",
        str(properties_file),
    ]
    log.info("formatting Kafka storage %s (cluster id %s)", log_dir, cluster_id)
    try:
        result = subprocess.run(
            cmd,
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_FORMAT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(f"kafka storage format timed out in {log_dir}") from exc
    if result.returncode != 0:
        raise LocalKafkaError(
            f"kafka storage format failed with exit code {result.returncode}:\n"
            + tail_lines(result.stdout + result.stderr)
        )


def random_cluster_id() -> str:
    """A Kafka cluster id: a random UUID, base64url without padding, not starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):
            return cluster_id
