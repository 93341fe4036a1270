"""Run a real single-node Apache Kafka (KRaft) broker from Maven Central jars, without Docker.

The broker jars are resolved by Maven from ``deploy/kafka/pom.xml``; nothing is built (see
``scrapifie.local.kafka_config`` for the classpath, ``server.properties`` and storage format).
The JVM is started directly (``java -cp <classpath> kafka.Kafka server.properties``) in its own
process group, with stdout and stderr going to a log file. It does not outlive the process that
started it: see ``scrapifie.local.process`` for how, and ``LocalKafka.start`` for the broker a
killed predecessor left behind. The lifecycle itself is ``scrapifie.local.server.LocalServer``'s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import signal
from collections.abc import Mapping
from pathlib import Path

from scrapifie.local.errors import LocalKafkaError
from scrapifie.local.kafka_config import (
    RESERVED_PROPERTIES,
    format_storage,
    require_executable,
    resolve_classpath,
    server_properties,
    write_server_properties,
)
from scrapifie.local.ports import port_accepts
from scrapifie.local.process import runs_as
from scrapifie.local.server import LocalServer, NotReady

__all__ = ["LocalKafka", "LocalKafkaError"]

_MIB = 1024 * 1024
_HEAP_RE = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")
_PROBE_TIMEOUT_S = 10.0


class LocalKafka(LocalServer):
    """A single-node Kafka 4.1 KRaft broker (combined broker+controller) on 127.0.0.1.

    Invariants:

    * Everything the broker writes lives under ``data_dir``: ``server.properties``, the cached
      classpath, ``cluster.id``, the pid file and the log directory ``data_dir/logs``. Two
      instances must not share a ``data_dir``.
    * The storage is formatted at most once: formatting is skipped when
      ``data_dir/logs/meta.properties`` exists, so ``start()`` after ``stop()`` or ``kill()``
      reuses the same cluster id, topics and data.
    * ``server.properties`` is rewritten on every ``start()`` from the constructor arguments.
    * At most one broker process per instance. The JVM runs in its own process group; ``stop()``
      and ``kill()`` signal the whole group and reap it, so no java process remains once they
      return. A broker still running when the interpreter exits is killed by an atexit hook;
      one started from the main thread also gets SIGTERM from the kernel if this process dies
      without stopping it (SIGKILL).
    * ``data_dir/kafka.pid`` names the running broker. ``start()`` stops a broker that an
      earlier, killed process left running on this ``data_dir`` (the pid file names a live java
      process working in ``data_dir`` on our ``server.properties``) before starting its own.
    * ``start()`` returns only once the broker answers a Kafka metadata request that lists it as
      a live broker; on failure the process is stopped and the error carries the log tail.
    * Maven runs only when no classpath is cached for the current pom content (sha256) or a
      cached jar has disappeared from the local repository.
    """

    name = "kafka"
    error = LocalKafkaError
    stop_signal = signal.SIGTERM  # a clean broker shutdown
    owns_pid_file = True

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int,
        controller_port: int,
        pom: Path,
        log_file: Path | None = None,
        heap: str = "512m",
        num_partitions: int = 3,
        message_max_bytes: int = 16 * _MIB,
        log4j_config: Path | None = None,
        extra_properties: Mapping[str, str] | None = None,
    ) -> None:
        """Describe a broker; nothing is started or written until ``start()``.

        Args:
            data_dir: Directory owned by this broker (created if missing).
            port: PLAINTEXT client listener port on 127.0.0.1.
            controller_port: KRaft controller listener port on 127.0.0.1.
            pom: The Maven pom resolving the Kafka jars (``deploy/kafka/pom.xml``).
            log_file: Where the JVM's stdout/stderr go (appended); defaults to
                ``data_dir/broker.log``.
            heap: JVM maximum heap, as for ``-Xmx`` (e.g. ``"512m"``).
            num_partitions: Default partition count for topics created without one.
            message_max_bytes: Broker ``message.max.bytes`` (and ``replica.fetch.max.bytes``).
            log4j_config: Log4j2 configuration; defaults to ``log4j2.properties`` next to the pom.
            extra_properties: Additional ``server.properties`` entries; they override the
                generated ones (e.g. ``{"broker.session.timeout.ms": "3000"}``), except the
                keys the runner relies on (roles, node id, quorum, listeners, log dirs).
        """
        super().__init__(
            data_dir=data_dir, port=port, log_file=log_file or data_dir.resolve() / "broker.log"
        )
        if not 0 < controller_port < 65536:
            raise ValueError(f"controller_port must be in 1..65535, got {controller_port}")
        if port == controller_port:
            raise ValueError("port and controller_port must differ")
        if not _HEAP_RE.match(heap):
            raise ValueError(f"heap must look like 512m or 1g, got {heap!r}")
        if num_partitions < 1:
            raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
        if message_max_bytes < 1:
            raise ValueError(f"message_max_bytes must be >= 1, got {message_max_bytes}")

        self.controller_port = controller_port
        self.pom = pom.resolve()
        self.heap = heap
        self.num_partitions = num_partitions
        self.message_max_bytes = message_max_bytes
        self.log4j_config = (log4j_config or self.pom.parent / "log4j2.properties").resolve()

        self.extra_properties = dict(extra_properties or {})
        reserved = sorted(RESERVED_PROPERTIES.intersection(self.extra_properties))
        if reserved:
            raise ValueError(f"extra_properties must not set {reserved}; use the constructor")

    # -- public API ---------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The client bootstrap address, ``127.0.0.1:<port>``."""
        return self.address

    @property
    def pid(self) -> int | None:
        """The broker JVM's pid while it is running, else ``None``."""
        return self._child_pid()

    @property
    def running(self) -> bool:
        """Whether the broker JVM started by this instance is alive."""
        return self.pid is not None

    @property
    def log_dir(self) -> Path:
        """Kafka's ``log.dirs`` (partition data and KRaft metadata)."""
        return self.data_dir / "logs"

    @property
    def properties_file(self) -> Path:
        """The generated ``server.properties``."""
        return self.data_dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        """``data_dir/kafka.pid``: written by ``start()``, removed once the broker is gone."""
        return self.data_dir / "kafka.pid"

    def start(self, timeout_s: float = 120.0) -> None:
        """Prepare (classpath, config, format) and start the broker; block until it is ready.

        A broker an earlier process started on this ``data_dir`` and never stopped (it was
        SIGKILLed) is stopped first: SIGTERM, then SIGKILL after 30 s.

        Raises:
            LocalKafkaError: this instance's broker is already running, java or mvn is missing,
                a port is already in use, Maven or storage formatting failed, or the broker
                exited or was not ready within ``timeout_s`` (the message includes the last
                lines of the broker log).
        """
        if self.running:
            raise LocalKafkaError(f"local kafka already running (pid {self.pid})")
        super().start(timeout_s)

    def restart(self, timeout_s: float = 120.0) -> None:
        """``stop()`` then ``start(timeout_s)`` on the same storage."""
        self.stop()
        self.start(timeout_s)

    def __repr__(self) -> str:
        return (
            f"LocalKafka(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r}, "
            f"pid={self.pid})"
        )

    # -- LocalServer hooks --------------------------------------------------------------------

    def _is_server(self, pid: int) -> bool:
        """A live java process working in ``data_dir`` on our ``server.properties``."""
        return runs_as(pid, name="java", cwd=self.data_dir, argument=str(self.properties_file))

    def _prepare(self, deadline: float) -> list[str]:
        java = require_executable("java", "install a Java 17+ runtime (e.g. openjdk-17-jre)")
        if not self.log4j_config.is_file():
            raise LocalKafkaError(f"log4j2 configuration not found: {self.log4j_config}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for port in (self.port, self.controller_port):
            if port_accepts(port):
                raise LocalKafkaError(
                    f"127.0.0.1:{port} already accepts connections; is another broker running? "
                    f"(pid file: {self.pid_file})"
                )

        classpath = resolve_classpath(self.pom, self.data_dir)
        props = server_properties(
            port=self.port,
            controller_port=self.controller_port,
            log_dir=self.log_dir,
            num_partitions=self.num_partitions,
            message_max_bytes=self.message_max_bytes,
            extra=self.extra_properties,
        )
        write_server_properties(self.properties_file, props)
        format_storage(
            java=java,
            classpath=classpath,
            log4j_config=self.log4j_config,
            properties_file=self.properties_file,
            log_dir=self.log_dir,
            data_dir=self.data_dir,
        )
        return [
            java,
            f"-Xmx{self.heap}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_config}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self.properties_file),
        ]

    def _wait_ready(self, deadline: float) -> None:
        self._wait_until(self._probe_once, deadline, "metadata probe")

    def _probe_once(self, remaining_s: float) -> None:
        if not port_accepts(self.port):
            raise NotReady("broker port not open yet")
        error = _probe_metadata(self.bootstrap, min(remaining_s, _PROBE_TIMEOUT_S))
        if error is not None:
            raise NotReady(error)
        # The process must still be ours: a probe can reach another broker on the port.
        if not self.running:
            raise NotReady("a broker answered, but not ours")


def _probe_metadata(bootstrap: str, timeout_s: float) -> str | None:
    """Ask the broker for metadata; ``None`` when it lists a live broker, else the reason.

    The probe runs its own event loop in a worker thread so that ``start()`` also works when
    called from code that already runs an event loop.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-probe") as pool:
        return pool.submit(asyncio.run, _probe_async(bootstrap, timeout_s)).result()


async def _probe_async(bootstrap: str, timeout_s: float) -> str | None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="scrapifie-local-kafka-probe",
        request_timeout_ms=max(1000, int(timeout_s * 1000)),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            await admin.list_topics()
            cluster = await admin.describe_cluster()
    except Exception as exc:
        return f"metadata probe failed: {exc!r}"
    finally:
        await admin.close()
    if not cluster.get("brokers"):
        return "metadata lists no live broker yet"
    return None
