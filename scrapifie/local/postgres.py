"""Run a private PostgreSQL cluster from Debian's server packages, without Docker or systemd.

The cluster is created and configured by ``scrapifie.local.pg_cluster`` (``initdb`` from
``/usr/lib/postgresql/<major>/bin``; as the ``postgres`` system user when this process is root).
The postmaster is started directly as a child of this process (not daemonized by ``pg_ctl
start``, so that this process reaps it even where PID 1 does not reap orphans, e.g. containers
without an init) and stopped the way ``pg_ctl stop`` does it: a shutdown signal to the
postmaster, then waiting until it has exited. The lifecycle itself is
``scrapifie.local.server.LocalServer``'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from scrapifie.local.errors import LocalPostgresError, PostgresNotInstalledError
from scrapifie.local.pg_cluster import DEFAULT_ROOT_BASE_DIR, PgCluster, find_bin_dir
from scrapifie.local.process import child_pids, pid_alive, proc_comm, wait_exit
from scrapifie.local.server import ChildContext, LocalServer, NotReady

__all__ = [
    "DEFAULT_ROOT_BASE_DIR",
    "LocalPostgres",
    "LocalPostgresError",
    "PostgresNotInstalledError",
    "StopMode",
    "find_bin_dir",
]

log = logging.getLogger(__name__)

StopMode = Literal["smart", "fast", "immediate"]

_ATEXIT_STOP_TIMEOUT_S = 10.0
_MODES: tuple[StopMode, ...] = ("smart", "fast", "immediate")
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class LocalPostgres(LocalServer):
    """A private PostgreSQL cluster listening on ``127.0.0.1:<port>``, for development and tests.

    Invariants (where the cluster lives, who runs it, its configuration and authentication:
    see ``PgCluster``; ``cluster_dir``, ``socket_dir`` and ``as_root`` are its):

    * The postmaster started by ``start()`` is a child of this process (own session, stderr
      appended to ``log_file``); ``stop()`` and ``kill()`` reap it, so no zombie is left even
      where PID 1 does not reap orphans. Started from the main thread, it gets a fast-shutdown
      signal from the kernel if this process dies without stopping it (SIGKILL). "Running"
      means: ``postmaster.pid`` names a live, non-zombie ``postgres`` process whose cwd is
      ``cluster_dir``; a ``postmaster.pid`` naming anything else is stale and removed by
      ``start()``, and a running one (left by a killed process) is stopped and started again.
    * ``start()`` after ``stop()`` or ``kill()`` reuses the cluster and its data.
    * After ``start()`` returns, role ``user`` (LOGIN, password ``password``) and database
      ``database`` owned by it exist, and ``dsn`` accepts connections.
    * At most one instance (and process) may drive a given ``data_dir`` at a time. A server
      started by this process and still running at interpreter exit is stopped by an atexit hook.
    """

    name = "postgres"
    error = LocalPostgresError
    stop_signal = _STOP_SIGNALS["fast"]
    # The postmaster alone: it stops its backends itself, and after a SIGKILL they notice its
    # death and exit on their own (what a crash looks like).
    signals_group = False
    poll_interval_s = 0.1

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int,
        database: str = "scrapifie",
        user: str = "scrapifie",
        password: str = "scrapifie",
        log_file: Path | None = None,
        bin_dir: Path | None = None,
        root_base_dir: Path = DEFAULT_ROOT_BASE_DIR,
    ) -> None:
        """Describe a cluster; nothing is created or started until ``start()``.

        Args:
            data_dir: Directory owned by this cluster (created if missing); see ``PgCluster``
                for where the cluster really lives when running as root.
            port: TCP port on 127.0.0.1 (also names the unix socket).
            database: Database created for ``user`` if missing.
            user: Login role created if missing; its password is (re)set on every start.
            password: Password of ``user``.
            log_file: Where the server's stderr goes (appended); defaults to
                ``data_dir/postgresql.log``.
            bin_dir: Directory with ``initdb`` and ``postgres``; defaults to ``find_bin_dir()``.
            root_base_dir: Parent of the cluster directories used when running as root.
        """
        super().__init__(
            data_dir=data_dir,
            port=port,
            log_file=log_file or data_dir.resolve() / "postgresql.log",
        )
        for name, value in (("database", database), ("user", user)):
            if not value or "\x00" in value:
                raise ValueError(f"{name} must be a non-empty string without NUL, got {value!r}")
        if "\x00" in password:
            raise ValueError("password must not contain NUL")

        self.database = database
        self.user = user
        self.password = password
        self._cluster = PgCluster(
            data_dir=self.data_dir,
            port=port,
            log_file=self.log_file,
            bin_dir=bin_dir,
            root_base_dir=root_base_dir,
        )
        self.as_root = self._cluster.as_root
        self.cluster_dir = self._cluster.cluster_dir
        self.socket_dir = self._cluster.socket_dir

    # -- public API ---------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """``postgresql://user:password@127.0.0.1:port/database`` (components URL-quoted)."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.address}/{quote(self.database, safe='')}"
        )

    @property
    def superuser(self) -> str:
        """The bootstrap superuser: the OS user the server runs as (``postgres`` when root)."""
        return self._cluster.superuser

    @property
    def superuser_conninfo(self) -> str:
        """A libpq conninfo reaching the ``postgres`` database as superuser over the socket."""
        return make_conninfo(
            host=str(self.socket_dir), port=self.port, user=self.superuser, dbname="postgres"
        )

    @property
    def bin_dir(self) -> Path:
        """The directory of the PostgreSQL programs used (resolved on first access)."""
        return self._cluster.bin_dir

    @property
    def pid_file(self) -> Path:
        """``cluster_dir/postmaster.pid``, written and removed by the server itself.

        ``start()`` removes one naming no postmaster of this cluster: dead, an unreaped zombie,
        or a recycled pid, where PostgreSQL itself only tolerates the first. Shared memory is
        still checked: the server finds its old segment by the data directory's inode and
        refuses to start while anything is attached.
        """
        return self._cluster.pid_file

    @property
    def pid(self) -> int | None:
        """The running postmaster's pid (see the class invariants), else ``None``."""
        return self._recorded_pid()

    def is_running(self) -> bool:
        """Whether a postmaster is running on this cluster (started by anyone)."""
        return self.pid is not None

    def start(self, timeout_s: float = 60.0) -> None:
        """Create the cluster if needed, start the server and block until ``dsn`` works.

        A server already running on this cluster (e.g. left over by an earlier process) is
        stopped first so that the current configuration applies.

        Raises:
            PostgresNotInstalledError: PostgreSQL's server programs (or, when root, the
                ``postgres`` system user) are missing.
            LocalPostgresError: initdb failed, the server did not start (port in use, ...), or
                it did not accept ``dsn`` within ``timeout_s``; the message includes the last
                lines of the server log.
        """
        super().start(timeout_s)

    def stop(self, timeout_s: float = 30.0, mode: StopMode = "fast") -> None:
        """Stop the server as ``pg_ctl stop -m <mode> -w`` does. A no-op if it is not running.

        The server is the postmaster this instance started or, failing that, the one
        ``postmaster.pid`` names (see the class invariants).

        Raises:
            LocalPostgresError: the server was still running after ``timeout_s``.
        """
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if not self._shutdown(_STOP_SIGNALS[mode], timeout_s):
            raise LocalPostgresError(
                f"local postgres on {self.cluster_dir} still running {timeout_s:.0f}s after "
                f"{mode} shutdown\n{self._log_tail_message()}"
            )

    def kill(self, timeout_s: float = 30.0) -> None:
        """SIGKILL the postmaster (a crash, for fault tests) and wait until it has exited.

        The backends and auxiliary processes notice the postmaster's death and exit on their
        own; this also waits for them (SIGKILLing any still alive after ``timeout_s``) so that a
        following ``start()`` finds the shared memory released and runs crash recovery.

        Raises:
            LocalPostgresError: no server is running, or the postmaster did not exit.
        """
        pid = self._running_pid()
        if pid is None:
            raise LocalPostgresError(f"local postgres on {self.cluster_dir} is not running")
        children = child_pids(pid)
        deadline = time.monotonic() + timeout_s
        # One started by another process (or instance) cannot be reaped by us: a zombie counts
        # as exited, and start() then treats its postmaster.pid as stale.
        super().kill(timeout_s)
        if not wait_exit(children, deadline):
            left = [child for child in children if pid_alive(child)]
            log.warning("postgres children %s outlived the postmaster; killing them", left)
            for child in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            wait_exit(left, time.monotonic() + 5.0)
        log.info("local postgres postmaster pid %d killed (%d children)", pid, len(children))

    def destroy(self) -> None:
        """Stop the server (immediate) if running and delete the cluster's files.

        Root: removes ``cluster_dir`` and the pointer file, keeping ``data_dir`` and the log.
        Not root: removes ``data_dir`` (the cluster), including a default log file inside it.
        A directory that does not look like a cluster (no ``PG_VERSION``, not empty) is kept.
        """
        self.stop(mode="immediate")
        self._cluster.destroy()

    def __repr__(self) -> str:
        return (
            f"LocalPostgres(port={self.port}, database={self.database!r}, user={self.user!r}, "
            f"cluster_dir={str(self.cluster_dir)!r})"
        )

    # -- LocalServer hooks --------------------------------------------------------------------

    def _is_server(self, pid: int) -> bool:
        return pid_alive(pid) and _is_postmaster_of(pid, self.cluster_dir)

    def _prepare(self, deadline: float) -> list[str]:
        self._cluster.prepare(deadline)
        return [self._cluster.program("postgres"), "-D", str(self.cluster_dir)]

    def _child(self) -> ChildContext:
        return self._cluster.child()

    def _wait_ready(self, deadline: float) -> None:
        with self._wait_until(
            lambda remaining: self._connect(self.superuser_conninfo, remaining),
            deadline,
            "superuser socket",
        ) as conn:
            self._ensure_role_and_database(conn)
        with self._wait_until(
            lambda remaining: self._connect(self.dsn, remaining), deadline, "dsn"
        ) as conn:
            conn.execute("SELECT 1")

    def _abort_start(self) -> None:
        with contextlib.suppress(LocalPostgresError):
            self.stop(mode="immediate")

    def _stop_at_exit(self) -> None:
        try:
            self.stop(timeout_s=_ATEXIT_STOP_TIMEOUT_S)
        except LocalPostgresError:
            with contextlib.suppress(LocalPostgresError):
                self.stop(timeout_s=_ATEXIT_STOP_TIMEOUT_S, mode="immediate")

    # -- readiness ----------------------------------------------------------------------------

    @staticmethod
    def _connect(conninfo: str, remaining_s: float) -> psycopg.Connection[TupleRow]:
        try:
            return psycopg.connect(
                conninfo, autocommit=True, connect_timeout=max(2, min(10, int(remaining_s)))
            )
        except psycopg.OperationalError as exc:
            raise NotReady(repr(exc)) from exc

    def _ensure_role_and_database(self, conn: psycopg.Connection[TupleRow]) -> None:
        role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [self.user])
        verb = "ALTER" if role.fetchone() else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(self.user), sql.Literal(self.password)
            )
        )
        if verb == "CREATE":
            log.info("created role %s", self.user)
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.database])
        if exists.fetchone() is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.database), sql.Identifier(self.user)
                )
            )
            log.info("created database %s owned by %s", self.database, self.user)


def _is_postmaster_of(pid: int, cluster_dir: Path) -> bool:
    """Whether ``pid`` is a postgres process working in ``cluster_dir`` (guards pid reuse).

    Without ``/proc`` (or when it is not readable) the check is skipped and returns ``True``.
    """
    comm = proc_comm(pid)
    if comm is not None and comm not in {"postgres", "postmaster"}:
        return False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return True
    return Path(cwd) == cluster_dir
