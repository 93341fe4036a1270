"""Run a real single-node Apache Kafka (KRaft) broker from Maven Central jars, without Docker.

The broker jars are resolved by Maven from ``deploy/kafka/pom.xml``; nothing is built. The
JVM is started directly (``java -cp <classpath> kafka.Kafka server.properties``) in its own
process group, with stdout and stderr going to a log file. It does not outlive the process that
started it: see ``scrapifie.local.process`` for how, and ``LocalKafka.start`` for the broker a
killed predecessor left behind.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from scrapifie.local.process import parent_death_signal, read_pid, runs_as, terminate

__all__ = ["LocalKafka", "LocalKafkaError"]

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_LOG_TAIL_LINES = 40
_HEAP_RE = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")
_MVN_TIMEOUT_S = 900.0
_FORMAT_TIMEOUT_S = 120.0
_POLL_INTERVAL_S = 0.25
_PROBE_TIMEOUT_S = 10.0
_KILL_WAIT_S = 10.0
_STALE_STOP_TIMEOUT_S = 30.0
# server.properties keys the runner itself relies on (storage location, identity, listeners).
_RESERVED_PROPERTIES = frozenset(
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

# Brokers started by this process that have not been stopped yet; killed at interpreter exit so
# that an aborted test run does not leave a JVM behind (the JVM runs in its own session, so it
# does not receive the terminal's SIGINT). A SIGKILL skips this hook: then the parent-death
# signal, or the next start's stale-broker check, stops the JVM.
_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()


def _kill_leftovers() -> None:
    with _live_lock:
        procs = list(_live)
        _live.clear()
    for proc in procs:
        if proc.poll() is None:
            log.warning("killing local kafka pid %d left running at exit", proc.pid)
            _signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(_KILL_WAIT_S)


atexit.register(_kill_leftovers)


class LocalKafkaError(RuntimeError):
    """The local broker could not be prepared, started, or stopped."""


class LocalKafka:
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
        for name, value in (("port", port), ("controller_port", controller_port)):
            if not 0 < value < 65536:
                raise ValueError(f"{name} must be in 1..65535, got {value}")
        if port == controller_port:
            raise ValueError("port and controller_port must differ")
        if not _HEAP_RE.match(heap):
            raise ValueError(f"heap must look like 512m or 1g, got {heap!r}")
        if num_partitions < 1:
            raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
        if message_max_bytes < 1:
            raise ValueError(f"message_max_bytes must be >= 1, got {message_max_bytes}")

        self.data_dir = data_dir.resolve()
        self.port = port
        self.controller_port = controller_port
        self.pom = pom.resolve()
        self.log_file = (log_file or self.data_dir / "broker.log").resolve()
        self.heap = heap
        self.num_partitions = num_partitions
        self.message_max_bytes = message_max_bytes
        self.log4j_config = (log4j_config or self.pom.parent / "log4j2.properties").resolve()

        self.extra_properties = dict(extra_properties or {})
        reserved = sorted(_RESERVED_PROPERTIES.intersection(self.extra_properties))
        if reserved:
            raise ValueError(f"extra_properties must not set {reserved}; use the constructor")

        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- public API ---------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The client bootstrap address, ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker JVM's pid while it is running, else ``None``."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

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

    def start(self, timeout_s: float = 120.0) -> None:
        """Prepare (classpath, config, format) and start the broker; block until it is ready.

        A broker an earlier process started on this ``data_dir`` and never stopped (it was
        SIGKILLed) is stopped first: SIGTERM, then SIGKILL after 30 s.

        Raises:
            LocalKafkaError: java or mvn is missing, a port is already in use, Maven or storage
                formatting failed, or the broker exited or was not ready within ``timeout_s``
                (the message includes the last lines of the broker log).
        """
        if self.running:
            raise LocalKafkaError(f"local kafka already running (pid {self.pid})")
        self._proc = None
        started = time.monotonic()
        deadline = started + timeout_s

        java = _require_executable("java", "install a Java 17+ runtime (e.g. openjdk-17-jre)")
        if not self.log4j_config.is_file():
            raise LocalKafkaError(f"log4j2 configuration not found: {self.log4j_config}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_stale()
        for port in (self.port, self.controller_port):
            if _port_accepts(port):
                raise LocalKafkaError(
                    f"127.0.0.1:{port} already accepts connections; is another broker running? "
                    f"(pid file: {self._pid_file}, content: {self._read_pid_file()!r})"
                )

        classpath = self._classpath()
        self._write_server_properties()
        self._format_storage(java, classpath)

        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            out.write(f"\n=== scrapifie local kafka start {time.ctime()} ===\n".encode())
            out.flush()
            self._log_offset = out.tell()
            cmd = [
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
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
                # SIGTERM (a clean broker shutdown) if we die without stopping it.
                preexec_fn=parent_death_signal(signal.SIGTERM),  # noqa: PLW1509
            )
        self._proc = proc
        with _live_lock:
            _live.add(proc)
        self._pid_file.write_text(f"{proc.pid}\n")
        log.info(
            "started local kafka pid %d on %s (log %s)", proc.pid, self.bootstrap, self.log_file
        )

        try:
            self._wait_ready(proc, deadline)
        except BaseException:
            self.stop()
            raise
        log.info("local kafka ready on %s in %.1fs", self.bootstrap, time.monotonic() - started)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the broker: SIGTERM to its process group, wait, then SIGKILL. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "local kafka pid %d ignored SIGTERM for %.0fs; killing", proc.pid, timeout_s
                )
                _signal_group(proc, signal.SIGKILL)
                proc.wait(_KILL_WAIT_S)
        log.info("local kafka pid %d exited with %s", proc.pid, proc.returncode)
        self._forget(proc)

    def kill(self) -> None:
        """SIGKILL the broker's process group without a clean shutdown (for fault tests)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(_KILL_WAIT_S)
        log.info("local kafka pid %d killed (%s)", proc.pid, proc.returncode)
        self._forget(proc)

    def restart(self, timeout_s: float = 120.0) -> None:
        """``stop()`` then ``start(timeout_s)`` on the same storage."""
        self.stop()
        self.start(timeout_s)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines the broker wrote to its log since the latest ``start()``."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except OSError as exc:
            return f"<cannot read {self.log_file}: {exc}>"
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"LocalKafka(bootstrap={self.bootstrap!r}, data_dir={str(self.data_dir)!r}, "
            f"pid={self.pid})"
        )

    # -- preparation --------------------------------------------------------------------------

    @property
    def _pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    def _stop_stale(self) -> None:
        """Stop the broker a killed predecessor left running on this data dir; drop its pid file.

        Only a pid naming a live java process that works in ``data_dir`` with our
        ``server.properties`` on its command line is signalled; any other pid is stale.
        """
        pid = read_pid(self._pid_file)
        if pid is None:
            return
        if runs_as(pid, name="java", cwd=self.data_dir, argument=str(self.properties_file)):
            log.warning("stopping local kafka pid %d left running by an earlier process", pid)
            if not terminate(pid, _STALE_STOP_TIMEOUT_S, _KILL_WAIT_S):
                raise LocalKafkaError(f"local kafka pid {pid} (left running) survived SIGKILL")
        self._pid_file.unlink(missing_ok=True)

    def _read_pid_file(self) -> str | None:
        try:
            return self._pid_file.read_text().strip()
        except OSError:
            return None

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        with _live_lock:
            _live.discard(proc)
        self._proc = None
        with contextlib.suppress(OSError):
            self._pid_file.unlink()

    def _classpath(self) -> str:
        """The broker classpath, from the cache keyed by the pom's sha256, else from Maven."""
        try:
            pom_bytes = self.pom.read_bytes()
        except OSError as exc:
            raise LocalKafkaError(f"cannot read Kafka pom {self.pom}: {exc}") from exc
        digest = hashlib.sha256(pom_bytes).hexdigest()
        cache = self.data_dir / f"classpath-{digest}.txt"
        if cache.is_file():
            classpath = cache.read_text().strip()
            missing = [p for p in classpath.split(os.pathsep) if p and not Path(p).exists()]
            if classpath and not missing:
                return classpath
            log.info(
                "cached classpath %s is stale (%d missing jars); re-resolving", cache, len(missing)
            )

        mvn = _require_executable("mvn", "install Apache Maven (e.g. apt-get install maven)")
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(self.pom),
            "dependency:build-classpath",
            f"-Dmdep.outputFile={tmp}",
        ]
        log.info("resolving Kafka classpath with Maven (%s)", self.pom)
        try:
            result = subprocess.run(
                cmd,
                cwd=self.pom.parent,
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
                + _tail(result.stdout + result.stderr)
            )
        classpath = tmp.read_text().strip()
        if not classpath:
            tmp.unlink(missing_ok=True)
            raise LocalKafkaError(f"mvn produced an empty classpath for {self.pom}")
        for old in self.data_dir.glob("classpath-*.txt"):
            old.unlink(missing_ok=True)
        tmp.replace(cache)
        return classpath

    def _server_properties(self) -> dict[str, str]:
        listeners = (
            f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
        )
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": listeners,
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": str(self.num_partitions),
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "message.max.bytes": str(self.message_max_bytes),
            "replica.fetch.max.bytes": str(self.message_max_bytes),
        }
        props.update(self.extra_properties)
        return props

    def _write_server_properties(self) -> None:
        lines = ["# Written by scrapifie.local.kafka.LocalKafka on every start; edits are lost."]
        lines += [f"{key}={value}" for key, value in self._server_properties().items()]
        tmp = self.properties_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.properties_file)

    def _format_storage(self, java: str, classpath: str) -> None:
        """Format ``log.dirs`` once, with a cluster id persisted in ``data_dir/cluster.id``."""
        if (self.log_dir / "meta.properties").is_file():
            return
        id_file = self.data_dir / "cluster.id"
        cluster_id = id_file.read_text().strip() if id_file.is_file() else ""
        if not cluster_id:
            cluster_id = _random_cluster_id()
            id_file.write_text(cluster_id + "\n")
        # With a static controller.quorum.voters, format takes no quorum flag: --standalone,
        # --initial-controllers and --no-initial-controllers all require the voters to be unset.
        cmd = [
            java,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={self.log4j_config}",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.properties_file),
        ]
        log.info("formatting Kafka storage %s (cluster id %s)", self.log_dir, cluster_id)
        try:
            result = subprocess.run(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_FORMAT_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalKafkaError(f"kafka storage format timed out in {self.log_dir}") from exc
        if result.returncode != 0:
            raise LocalKafkaError(
                f"kafka storage format failed with exit code {result.returncode}:\n"
                + _tail(result.stdout + result.stderr)
            )

    # -- readiness ----------------------------------------------------------------------------

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        last_error = "broker port not open yet"
        while True:
            code = proc.poll()
            if code is not None:
                raise LocalKafkaError(
                    f"local kafka exited with code {code} before it was ready; "
                    f"last {_LOG_TAIL_LINES} lines of {self.log_file}:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LocalKafkaError(
                    f"local kafka on {self.bootstrap} not ready before the timeout "
                    f"({last_error}); last {_LOG_TAIL_LINES} lines of {self.log_file}:\n"
                    f"{self.log_tail()}"
                )
            if _port_accepts(self.port):
                error = _probe(self.bootstrap, min(remaining, _PROBE_TIMEOUT_S))
                # The process must still be ours: a probe can reach another broker on the port.
                if error is None and proc.poll() is None:
                    return
                last_error = error or last_error
            time.sleep(_POLL_INTERVAL_S)


def _probe(bootstrap: str, timeout_s: float) -> str | None:
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


def _port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process group led by ``proc`` (it was started with ``start_new_session``).

    Only called while ``proc`` has not been reaped, so its pid (= group id) cannot have been
    reused by an unrelated process.
    """
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        proc.send_signal(sig)


def _require_executable(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LocalKafkaError(f"{name!r} not found on PATH; {hint}")
    return path


def _random_cluster_id() -> str:
    """A Kafka cluster id: a random UUID, base64url without padding, not starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):
            return cluster_id


def _tail(output: bytes, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(output.decode("utf-8", "replace").splitlines()[-lines:])
