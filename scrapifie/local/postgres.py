"""Run a private PostgreSQL cluster from Debian's server packages, without Docker or systemd.

The cluster is created with ``initdb`` from ``/usr/lib/postgresql/<major>/bin``; the
postmaster is started directly as a child of this process (not daemonized by ``pg_ctl start``, so
that this process reaps it even where PID 1 does not reap orphans, e.g. containers without an
init) and stopped with ``pg_ctl stop``. PostgreSQL refuses to run as root, so when this process is
root every PostgreSQL program runs as the ``postgres`` system user (created by Debian's
``postgresql`` package) and the cluster lives under ``/var/tmp/scrapifie-postgres`` where that
user can reach it, even when ``data_dir`` sits inside a root-only directory.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from scrapifie.local.process import (
    child_pids,
    parent_death_signal,
    pid_alive,
    proc_comm,
    wait_exit,
)

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

DEFAULT_ROOT_BASE_DIR = Path("/var/tmp/scrapifie-postgres")

_SYSTEM_USER = "postgres"
_INSTALL_HINT = "install Debian's PostgreSQL server with `apt-get install postgresql`"
_REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres")
_DEBIAN_LIB_DIR = Path("/usr/lib/postgresql")
_CONF_NAME = "scrapifie.conf"
_POINTER_NAME = "POSTGRES_CLUSTER_LOCATION.txt"
_LOG_TAIL_LINES = 40
_POLL_INTERVAL_S = 0.1
_CMD_TIMEOUT_S = 30.0
_ATEXIT_STOP_TIMEOUT_S = 10.0
# sun_path is 108 bytes on Linux including the NUL; PostgreSQL also creates "<socket>.lock".
_SOCKET_PATH_MAX = 107
_SOCKET_SUFFIX_MAX = len("/.s.PGSQL.65535.lock")
_UNSAFE_SOCKET_DIR_CHARS = frozenset(",'\"\\ \t\n")
_MODES: tuple[StopMode, ...] = ("smart", "fast", "immediate")
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}

# Instances whose server this process started and has not stopped or killed yet; stopped at
# interpreter exit: the postmaster runs in its own session and would otherwise outlive an aborted
# test run.
_live: set[LocalPostgres] = set()
_live_lock = threading.Lock()


def _stop_leftovers() -> None:
    with _live_lock:
        instances = list(_live)
        _live.clear()
    for instance in instances:
        log.warning("stopping local postgres %s left running at exit", instance.cluster_dir)
        try:
            instance.stop(timeout_s=_ATEXIT_STOP_TIMEOUT_S)
        except LocalPostgresError:
            with contextlib.suppress(LocalPostgresError):
                instance.stop(timeout_s=_ATEXIT_STOP_TIMEOUT_S, mode="immediate")


atexit.register(_stop_leftovers)


class LocalPostgresError(RuntimeError):
    """The local PostgreSQL cluster could not be prepared, started, stopped or killed."""


class PostgresNotInstalledError(LocalPostgresError):
    """PostgreSQL's server programs (or, when root, the ``postgres`` system user) are missing."""


@dataclass(frozen=True)
class _ChildContext:
    """Environment and credentials for a PostgreSQL child process."""

    env: dict[str, str]
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None
    cwd: str | None = None


@dataclass(frozen=True)
class _Account:
    """The unprivileged system account PostgreSQL programs run as when we are root."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def find_bin_dir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    ``pg_config --bindir`` is tried first; if it is missing or points at a directory without the
    server programs (``pg_config`` also ships with client-only packages such as ``libpq-dev``),
    the newest ``/usr/lib/postgresql/<major>/bin`` is used.

    Raises:
        PostgresNotInstalledError: no directory holds all three programs.
    """
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            result = subprocess.run(
                [pg_config, "--bindir"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_CMD_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.debug("pg_config --bindir failed: %s", exc)
        else:
            if result.returncode == 0 and result.stdout.strip():
                candidates.append(Path(result.stdout.strip()))
    candidates += sorted(_DEBIAN_LIB_DIR.glob("*/bin"), key=_version_key, reverse=True)
    for candidate in candidates:
        if all(os.access(candidate / name, os.X_OK) for name in _REQUIRED_PROGRAMS):
            return candidate
    raise PostgresNotInstalledError(
        f"PostgreSQL server programs ({', '.join(_REQUIRED_PROGRAMS)}) not found via pg_config "
        f"or in {_DEBIAN_LIB_DIR}/*/bin; {_INSTALL_HINT}"
    )


class LocalPostgres:
    """A private PostgreSQL cluster listening on ``127.0.0.1:<port>``, for development and tests.

    Invariants:

    * ``cluster_dir`` is the PostgreSQL data directory. Not root: it is ``data_dir`` itself.
      Root: it is ``root_base_dir/<sha256(resolved data_dir)[:16]>``, owned by the ``postgres``
      system user with mode 0700, and ``data_dir`` holds only a pointer file naming it plus the
      default log file. The same ``data_dir`` always maps to the same cluster.
    * When the effective uid is 0, ``initdb``, ``pg_ctl`` and the server run as the ``postgres``
      system user; nothing PostgreSQL runs as root.
    * The postmaster started by ``start()`` is a child of this process (own session, stderr
      appended to ``log_file``); ``stop()`` and ``kill()`` reap it, so no zombie is left even
      where PID 1 does not reap orphans. Started from the main thread, it gets a fast-shutdown
      signal from the kernel if this process dies without stopping it (SIGKILL). "Running"
      means: ``postmaster.pid`` names a live, non-zombie ``postgres`` process whose cwd is
      ``cluster_dir``; a ``postmaster.pid`` naming anything else is stale and removed by
      ``start()``, and a running one (left by a killed process) is stopped and started again.
    * ``initdb`` runs at most once per cluster (when ``PG_VERSION`` is missing); ``start()``
      after ``stop()`` or ``kill()`` reuses the cluster and its data. ``fsync`` stays on.
    * ``pg_hba.conf`` and ``scrapifie.conf`` (included from ``postgresql.conf``) are rewritten on
      every ``start()`` from the constructor arguments.
    * The server listens on TCP 127.0.0.1 only, plus a unix socket in ``socket_dir`` (the
      cluster directory, mode 0700, unless that path is too long for a socket). TCP logins use
      scram-sha-256; the socket trusts the superuser (the OS user running the server), which is
      safe because only that user and root can enter ``socket_dir``.
    * After ``start()`` returns, role ``user`` (LOGIN, password ``password``) and database
      ``database`` owned by it exist, and ``dsn`` accepts connections.
    * At most one instance (and process) may drive a given ``data_dir`` at a time. A server
      started by this process and still running at interpreter exit is stopped by an atexit hook.
    """

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
            data_dir: Directory owned by this cluster (created if missing); see the class
                docstring for where the cluster really lives when running as root.
            port: TCP port on 127.0.0.1 (also names the unix socket).
            database: Database created for ``user`` if missing.
            user: Login role created if missing; its password is (re)set on every start.
            password: Password of ``user``.
            log_file: Where the server's stderr goes (appended); defaults to
                ``data_dir/postgresql.log``.
            bin_dir: Directory with ``initdb``/``pg_ctl``/``postgres``; defaults to
                ``find_bin_dir()``.
            root_base_dir: Parent of the cluster directories used when running as root.
        """
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        for name, value in (("database", database), ("user", user)):
            if not value or "\x00" in value:
                raise ValueError(f"{name} must be a non-empty string without NUL, got {value!r}")
        if "\x00" in password:
            raise ValueError("password must not contain NUL")

        self.data_dir = data_dir.resolve()
        self.port = port
        self.database = database
        self.user = user
        self.password = password
        self.log_file = (log_file or self.data_dir / "postgresql.log").resolve()
        self.as_root = os.geteuid() == 0
        self._bin_dir = bin_dir.resolve() if bin_dir is not None else None
        self._key = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        if self.as_root:
            self.cluster_dir = root_base_dir.resolve() / self._key
        else:
            self.cluster_dir = self.data_dir
        self._root_base_dir = root_base_dir.resolve()
        socket_dir = self.cluster_dir
        if not _usable_socket_dir(socket_dir):
            socket_dir = Path(tempfile.gettempdir()).resolve() / f"scrapifie-pg-{self._key}"
        self.socket_dir = socket_dir
        self._log_offset = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._account_cache: _Account | None = None

    # -- public API ---------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """``postgresql://user:password@127.0.0.1:port/database`` (components URL-quoted)."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(self.database, safe='')}"
        )

    @property
    def superuser(self) -> str:
        """The bootstrap superuser: the OS user the server runs as (``postgres`` when root)."""
        if self.as_root:
            return _SYSTEM_USER
        try:
            return pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            raise LocalPostgresError(
                f"uid {os.geteuid()} has no passwd entry; initdb needs one"
            ) from None

    @property
    def superuser_conninfo(self) -> str:
        """A libpq conninfo reaching the ``postgres`` database as superuser over the socket."""
        return make_conninfo(
            host=str(self.socket_dir), port=self.port, user=self.superuser, dbname="postgres"
        )

    @property
    def bin_dir(self) -> Path:
        """The directory of the PostgreSQL programs used (resolved on first access)."""
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    @property
    def pid(self) -> int | None:
        """The running postmaster's pid (see the class invariants), else ``None``."""
        pid = self._read_postmaster_pid()
        if pid is None or not pid_alive(pid):
            return None
        return pid if _is_postmaster_of(pid, self.cluster_dir) else None

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
        started = time.monotonic()
        deadline = started + timeout_s
        self._prepare_dirs()
        if (self.cluster_dir / "PG_VERSION").is_file():
            self._check_cluster_version()
        else:
            self._initdb(deadline)
        self._write_config()

        pid_file = self.cluster_dir / "postmaster.pid"
        if self.is_running():
            log.warning(
                "local postgres on %s already running; restarting it to apply the config",
                self.cluster_dir,
            )
            self.stop(timeout_s=max(1.0, deadline - time.monotonic()))
        elif pid_file.exists():
            # Dead, an unreaped zombie, or a recycled pid: PostgreSQL itself only tolerates the
            # first. Shared memory is still checked: the server finds its old segment by the
            # data directory's inode and refuses to start while anything is attached.
            log.info("removing stale %s (pid %s)", pid_file, self._read_postmaster_pid())
            pid_file.unlink(missing_ok=True)
        self._remove_stale_socket_locks()

        with _live_lock:
            _live.add(self)
        try:
            self._spawn_postmaster()
            self._ensure_role_and_database(deadline)
            self._wait_for_dsn(deadline)
        except BaseException:
            with contextlib.suppress(LocalPostgresError):
                self.stop(mode="immediate")
            raise
        log.info(
            "local postgres ready on 127.0.0.1:%d (cluster %s, pid %s) in %.2fs",
            self.port,
            self.cluster_dir,
            self.pid,
            time.monotonic() - started,
        )

    def stop(self, timeout_s: float = 30.0, mode: StopMode = "fast") -> None:
        """Stop the server with ``pg_ctl stop -m <mode> -w``. A no-op if it is not running.

        Raises:
            LocalPostgresError: the server was still running after ``timeout_s``.
        """
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        with _live_lock:
            _live.discard(self)
        deadline = time.monotonic() + timeout_s
        proc = self._proc
        if self.is_running():
            seconds = max(1, int(timeout_s))
            cmd = [self._program("pg_ctl"), "stop", "-D", str(self.cluster_dir)]
            cmd += ["-m", mode, "-w", "-t", str(seconds)]
            result = self._run(cmd, timeout=seconds + _CMD_TIMEOUT_S)
            if result.returncode != 0 and self.is_running():
                raise LocalPostgresError(
                    f"pg_ctl stop -m {mode} failed with exit code {result.returncode}:\n"
                    f"{result.stdout.strip()}\n{self._log_tail_message()}"
                )
            log.info("local postgres on %s stopped (%s)", self.cluster_dir, mode)
        elif proc is not None and proc.poll() is None:
            # Our postmaster has not written postmaster.pid yet (or it was deleted): signal it
            # the way pg_ctl would.
            log.info("signalling local postgres pid %d directly (%s)", proc.pid, mode)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(_STOP_SIGNALS[mode])
        else:
            log.debug("local postgres on %s is not running; nothing to stop", self.cluster_dir)
        if proc is not None:
            try:
                proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise LocalPostgresError(
                    f"local postgres pid {proc.pid} still running {timeout_s:.0f}s after "
                    f"{mode} shutdown\n{self._log_tail_message()}"
                ) from None
            self._proc = None

    def kill(self, timeout_s: float = 30.0) -> None:
        """SIGKILL the postmaster (a crash, for fault tests) and wait until it has exited.

        The backends and auxiliary processes notice the postmaster's death and exit on their
        own; this also waits for them (SIGKILLing any still alive after ``timeout_s``) so that a
        following ``start()`` finds the shared memory released and runs crash recovery.

        Raises:
            LocalPostgresError: no server is running, or the postmaster did not exit.
        """
        with _live_lock:
            _live.discard(self)
        proc = self._proc
        pid = self.pid
        if pid is None and proc is not None and proc.poll() is None:
            pid = proc.pid
        if pid is None:
            raise LocalPostgresError(f"local postgres on {self.cluster_dir} is not running")
        children = child_pids(pid)
        deadline = time.monotonic() + timeout_s
        if proc is not None and proc.pid == pid:
            proc.kill()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                raise LocalPostgresError(f"postmaster pid {pid} survived SIGKILL") from None
            self._proc = None
        else:
            # Started by another process (or instance): we cannot reap it; a zombie counts as
            # exited, and start() then treats its postmaster.pid as stale.
            os.kill(pid, signal.SIGKILL)
            if not wait_exit([pid], deadline):
                raise LocalPostgresError(f"postmaster pid {pid} survived SIGKILL")
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
        if self.is_running():
            self.stop(mode="immediate")
        cluster = self.cluster_dir
        if cluster.is_dir():
            if (cluster / "PG_VERSION").is_file() or not any(cluster.iterdir()):
                shutil.rmtree(cluster)
                log.info("deleted local postgres cluster %s", cluster)
            else:
                log.warning("not deleting %s: it does not look like a cluster", cluster)
        if self.as_root:
            (self.data_dir / _POINTER_NAME).unlink(missing_ok=True)
        if self.socket_dir != cluster:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log written since the latest ``start()``."""
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
            f"LocalPostgres(port={self.port}, database={self.database!r}, user={self.user!r}, "
            f"cluster_dir={str(self.cluster_dir)!r})"
        )

    # -- processes ----------------------------------------------------------------------------

    def _account(self) -> _Account:
        """The ``postgres`` system account (only meaningful when root)."""
        if self._account_cache is None:
            try:
                entry = pwd.getpwnam(_SYSTEM_USER)
            except KeyError:
                raise PostgresNotInstalledError(
                    f"running as root, but there is no {_SYSTEM_USER!r} system user to run "
                    f"PostgreSQL as (PostgreSQL refuses to run as root); {_INSTALL_HINT}"
                ) from None
            groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
            self._account_cache = _Account(
                entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir
            )
        return self._account_cache

    def _program(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _child(self) -> _ChildContext:
        """How PostgreSQL programs are run: as ``postgres`` when root, without ``PG*`` vars."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_MESSAGES"] = "C"
        if not self.as_root:
            return _ChildContext(env=env)
        account = self._account()
        env.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
        return _ChildContext(
            env=env, uid=account.uid, gid=account.gid, groups=account.groups, cwd="/"
        )

    def _run(
        self,
        cmd: list[str],
        *,
        timeout: float = _CMD_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program (as ``postgres`` when root), capturing stdout+stderr as text.

        Never raises on exit codes; raises ``LocalPostgresError`` on timeouts and exec errors.
        """
        child = self._child()
        try:
            return subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=child.env,
                cwd=child.cwd,
                user=child.uid,
                group=child.gid,
                extra_groups=child.groups,
                umask=0o077,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalPostgresError(
                f"{' '.join(cmd)} timed out after {timeout:.0f}s\n{self._log_tail_message()}"
            ) from exc
        except OSError as exc:
            raise LocalPostgresError(f"cannot run {cmd[0]}: {exc}") from exc

    # -- preparation --------------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            account = self._account()
            if (self.data_dir / "PG_VERSION").is_file():
                raise LocalPostgresError(
                    f"{self.data_dir} holds a cluster created by a non-root user; PostgreSQL "
                    "cannot run it as root. Use another data_dir or run as that user."
                )
            base = self._root_base_dir
            base.mkdir(mode=0o755, parents=True, exist_ok=True)
            info = base.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
                raise LocalPostgresError(
                    f"{base} must be a directory owned by root (found uid {info.st_uid}, "
                    f"mode {stat.filemode(info.st_mode)})"
                )
            os.chmod(base, 0o755)
            self._make_private_dir(self.cluster_dir, account)
            pointer = self.data_dir / _POINTER_NAME
            pointer.write_text(
                "PostgreSQL refuses to run as root, so the cluster for this directory runs as\n"
                f"the {account.name!r} system user and lives at:\n\n    {self.cluster_dir}\n\n"
                "(sha256 of this directory's path, first 16 hex digits). It is reused by later\n"
                "runs with the same data_dir; LocalPostgres.destroy() deletes it.\n"
            )
        if self.socket_dir != self.cluster_dir:
            self._make_private_dir(self.socket_dir, self._account() if self.as_root else None)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _make_private_dir(path: Path, account: _Account | None) -> None:
        """Create ``path`` (0700) owned by ``account`` (or by us) if missing; verify it."""
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
            if account is not None:
                os.chown(path, account.uid, account.gid)
        info = path.lstat()
        owner = account.uid if account is not None else os.geteuid()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner:
            raise LocalPostgresError(
                f"{path} must be a directory owned by uid {owner} (found uid {info.st_uid}, "
                f"mode {stat.filemode(info.st_mode)}); remove it and retry"
            )
        os.chmod(path, 0o700)

    def _binary_major(self) -> int:
        result = self._run([self._program("postgres"), "--version"])
        match = re.search(r"\(PostgreSQL\)\s+(\d+)", result.stdout)
        if result.returncode != 0 or match is None:
            raise LocalPostgresError(f"cannot determine PostgreSQL version: {result.stdout!r}")
        return int(match.group(1))

    def _check_cluster_version(self) -> None:
        cluster_major = (self.cluster_dir / "PG_VERSION").read_text().strip()
        binary_major = self._binary_major()
        if cluster_major != str(binary_major):
            raise LocalPostgresError(
                f"cluster {self.cluster_dir} was created by PostgreSQL {cluster_major}, but "
                f"{self.bin_dir} is PostgreSQL {binary_major}; destroy() it or pass bin_dir"
            )

    def _initdb(self, deadline: float) -> None:
        log.info("initialising local postgres cluster %s (%s)", self.cluster_dir, self.bin_dir)
        output = ""
        for locale in ("C.UTF-8", "C"):
            cmd = [
                self._program("initdb"),
                "-D",
                str(self.cluster_dir),
                f"--username={self.superuser}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                f"--locale={locale}",
            ]
            result = self._run(cmd, timeout=max(_CMD_TIMEOUT_S, deadline - time.monotonic()))
            output = result.stdout
            if result.returncode == 0 and (self.cluster_dir / "PG_VERSION").is_file():
                with self.log_file.open("a", encoding="utf-8") as out:
                    out.write(f"\n=== initdb {time.ctime()} ===\n{output}")
                return
            if "locale" not in output.lower():
                break
            log.warning("initdb with locale %s failed; retrying with C", locale)
        raise LocalPostgresError(
            f"initdb failed for {self.cluster_dir}:\n"
            + "\n".join(output.splitlines()[-_LOG_TAIL_LINES:])
        )

    def _write_cluster_file(self, name: str, text: str) -> None:
        """Atomically write ``cluster_dir/name`` (0600, owned by the server's user)."""
        target = self.cluster_dir / name
        tmp = target.with_name(f".{name}.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if self.as_root:
            account = self._account()
            os.chown(tmp, account.uid, account.gid)
        tmp.replace(target)

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": _conf_string(str(self.socket_dir)),
            "unix_socket_permissions": "0700",
            "max_connections": "200",
            "shared_buffers": "'128MB'",
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "password_encryption": "'scram-sha-256'",
            "logging_collector": "off",
            "log_destination": "'stderr'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "log_timezone": "'UTC'",
            "timezone": "'UTC'",
        }
        lines = ["# Written by scrapifie.local.postgres.LocalPostgres on every start; edits lost."]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        self._write_cluster_file(_CONF_NAME, "\n".join(lines) + "\n")

        superuser = '"' + self.superuser.replace('"', '""') + '"'
        hba = [
            "# Written by scrapifie.local.postgres.LocalPostgres on every start; edits are lost.",
            "# The socket directory is 0700, so only the server's OS user and root reach it.",
            f"local   all   {superuser}   trust",
            "host    all   all   127.0.0.1/32   scram-sha-256",
        ]
        self._write_cluster_file("pg_hba.conf", "\n".join(hba) + "\n")

        main_conf = self.cluster_dir / "postgresql.conf"
        include = f"include '{_CONF_NAME}'"
        text = main_conf.read_text(encoding="utf-8")
        if include not in text.splitlines():
            with main_conf.open("a", encoding="utf-8") as f:
                f.write("\n# Added by scrapifie.local.postgres (settings override the above)\n")
                f.write(include + "\n")

    # -- server -------------------------------------------------------------------------------

    def _read_postmaster_pid(self) -> int | None:
        try:
            first = (self.cluster_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first.strip())
        except (OSError, ValueError):
            return None

    def _remove_stale_socket_locks(self) -> None:
        """Delete socket lock files (and sockets) in ``socket_dir`` whose pid is dead or a zombie.

        The server removes them itself when the pid is gone, but not while a killed postmaster
        that was not our child is still an unreaped zombie (PID 1 may reap orphans late or never).
        """
        for lock in self.socket_dir.glob(".s.PGSQL.*.lock"):
            try:
                pid = int(lock.read_text().split("\n", 1)[0].strip())
            except (OSError, ValueError):
                continue
            if pid_alive(pid):
                continue
            log.info("removing stale socket lock %s (pid %d)", lock, pid)
            lock.unlink(missing_ok=True)
            lock.with_suffix("").unlink(missing_ok=True)

    def _spawn_postmaster(self) -> None:
        """Start ``postgres -D cluster_dir`` as our child, stderr appended to ``log_file``.

        The log file is opened here (by us), so it may live where the server's user could not
        open it, e.g. inside a root-only ``data_dir``.
        """
        cmd = [self._program("postgres"), "-D", str(self.cluster_dir)]
        child = self._child()
        with self.log_file.open("ab") as out:
            out.write(f"\n=== scrapifie local postgres start {time.ctime()} ===\n".encode())
            out.flush()
            self._log_offset = out.tell()
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=child.env,
                    cwd=child.cwd,
                    user=child.uid,
                    group=child.gid,
                    extra_groups=child.groups,
                    umask=0o077,
                    start_new_session=True,
                    # Fast shutdown if we die without stopping it (see scrapifie.local.process).
                    preexec_fn=parent_death_signal(_STOP_SIGNALS["fast"]),  # noqa: PLW1509
                )
            except OSError as exc:
                raise LocalPostgresError(f"cannot run {cmd[0]}: {exc}") from exc
        self._proc = proc
        log.info(
            "started local postgres pid %d on 127.0.0.1:%d (cluster %s, log %s)",
            proc.pid,
            self.port,
            self.cluster_dir,
            self.log_file,
        )

    def _ensure_role_and_database(self, deadline: float) -> None:
        conn = self._connect_until(self.superuser_conninfo, deadline, "superuser socket")
        with conn:
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

    def _wait_for_dsn(self, deadline: float) -> None:
        conn = self._connect_until(self.dsn, deadline, "dsn")
        with conn:
            conn.execute("SELECT 1")

    def _connect_until(
        self, conninfo: str, deadline: float, what: str
    ) -> psycopg.Connection[TupleRow]:
        last_error: Exception | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LocalPostgresError(
                    f"local postgres did not accept connections ({what}) before the timeout: "
                    f"{last_error!r}\n{self._log_tail_message()}"
                )
            try:
                return psycopg.connect(
                    conninfo, autocommit=True, connect_timeout=max(2, min(10, int(remaining)))
                )
            except psycopg.OperationalError as exc:
                last_error = exc
            proc = self._proc
            code = proc.poll() if proc is not None else None
            if code is not None:
                raise LocalPostgresError(
                    f"local postgres exited with code {code} while waiting for connections "
                    f"({what}; port {self.port} in use?): {last_error!r}\n"
                    f"{self._log_tail_message()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _log_tail_message(self) -> str:
        return f"last {_LOG_TAIL_LINES} lines of {self.log_file}:\n{self.log_tail()}"


# -- helpers ----------------------------------------------------------------------------------


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>/bin`` (``15`` > ``9.6``; junk sorts first)."""
    parts = bin_dir.parent.name.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (-1,)


def _usable_socket_dir(path: Path) -> bool:
    """Whether ``path`` fits in a unix socket address and in ``unix_socket_directories``."""
    too_long = len(os.fsencode(path)) + _SOCKET_SUFFIX_MAX > _SOCKET_PATH_MAX
    return not too_long and _UNSAFE_SOCKET_DIR_CHARS.isdisjoint(str(path))


def _conf_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


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
