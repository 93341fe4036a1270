"""A private PostgreSQL cluster on disk, and Debian's PostgreSQL programs run on it.

The cluster is created with ``initdb`` from ``/usr/lib/postgresql/<major>/bin``. PostgreSQL
refuses to run as root, so when this process is root every PostgreSQL program runs as the
``postgres`` system user (created by Debian's ``postgresql`` package) and the cluster lives under
``/var/tmp/scrapifie-postgres`` where that user can reach it, even when ``data_dir`` sits inside a
root-only directory. Running the server is ``scrapifie.local.postgres``'s business.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from scrapifie.local.errors import LocalPostgresError, PostgresNotInstalledError
from scrapifie.local.process import pid_alive, read_pid
from scrapifie.local.server import ChildContext, tail_lines

__all__ = ["DEFAULT_ROOT_BASE_DIR", "PgCluster", "find_bin_dir"]

log = logging.getLogger(__name__)

DEFAULT_ROOT_BASE_DIR = Path("/var/tmp/scrapifie-postgres")

_SYSTEM_USER = "postgres"
_INSTALL_HINT = "install Debian's PostgreSQL server with `apt-get install postgresql`"
_REQUIRED_PROGRAMS = ("initdb", "postgres")
_DEBIAN_LIB_DIR = Path("/usr/lib/postgresql")
_CONF_NAME = "scrapifie.conf"
_POINTER_NAME = "POSTGRES_CLUSTER_LOCATION.txt"
_CMD_TIMEOUT_S = 30.0
# sun_path is 108 bytes on Linux including the NUL; PostgreSQL also creates "<socket>.lock".
_SOCKET_PATH_MAX = 107
_SOCKET_SUFFIX_MAX = len("/.s.PGSQL.65535.lock")
_UNSAFE_SOCKET_DIR_CHARS = frozenset(",'\"\\ \t\n")


@dataclass(frozen=True)
class _Account:
    """The unprivileged system account PostgreSQL programs run as when we are root."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def find_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``postgres``.

    ``pg_config --bindir`` is tried first; if it is missing or points at a directory without the
    server programs (``pg_config`` also ships with client-only packages such as ``libpq-dev``),
    the newest ``/usr/lib/postgresql/<major>/bin`` is used.

    Raises:
        PostgresNotInstalledError: no directory holds both programs.
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


class PgCluster:
    """The PostgreSQL data directory of one ``data_dir``, and the programs acting on it.

    Invariants:

    * ``cluster_dir`` is the PostgreSQL data directory. Not root: it is ``data_dir`` itself.
      Root: it is ``root_base_dir/<sha256(resolved data_dir)[:16]>``, owned by the ``postgres``
      system user with mode 0700, and ``data_dir`` holds only a pointer file naming it plus the
      default log file. The same ``data_dir`` always maps to the same cluster.
    * When the effective uid is 0, ``initdb`` and the server run as the ``postgres`` system
      user (``child()``); nothing PostgreSQL runs as root.
    * ``initdb`` runs at most once per cluster (when ``PG_VERSION`` is missing); later
      ``prepare()`` calls reuse the cluster and its data. ``fsync`` stays on.
    * ``pg_hba.conf`` and ``scrapifie.conf`` (included from ``postgresql.conf``) are rewritten by
      every ``prepare()`` from the constructor arguments.
    * The server listens on TCP 127.0.0.1 only, plus a unix socket in ``socket_dir`` (the
      cluster directory, mode 0700, unless that path is too long for a socket). TCP logins use
      scram-sha-256; the socket trusts the superuser (the OS user running the server), which is
      safe because only that user and root can enter ``socket_dir``.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int,
        log_file: Path,
        bin_dir: Path | None,
        root_base_dir: Path,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.log_file = log_file.resolve()
        self.as_root = os.geteuid() == 0
        self._bin_dir = bin_dir.resolve() if bin_dir is not None else None
        key = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        self._root_base_dir = root_base_dir.resolve()
        self.cluster_dir = self._root_base_dir / key if self.as_root else self.data_dir
        socket_dir = self.cluster_dir
        if not _usable_socket_dir(socket_dir):
            socket_dir = Path(tempfile.gettempdir()).resolve() / f"scrapifie-pg-{key}"
        self.socket_dir = socket_dir
        self._account_cache: _Account | None = None

    @property
    def pid_file(self) -> Path:
        """``postmaster.pid``, written and removed by the server itself."""
        return self.cluster_dir / "postmaster.pid"

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
    def bin_dir(self) -> Path:
        """The directory of the PostgreSQL programs used (resolved on first access)."""
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    def program(self, name: str) -> str:
        """The path of PostgreSQL program ``name``."""
        return str(self.bin_dir / name)

    def child(self) -> ChildContext:
        """How PostgreSQL programs are run: as ``postgres`` when root, without ``PG*`` vars."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_MESSAGES"] = "C"
        if not self.as_root:
            return ChildContext(env=env, umask=0o077)
        account = self._account()
        env.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
        return ChildContext(
            env=env,
            cwd=Path("/"),
            uid=account.uid,
            gid=account.gid,
            groups=account.groups,
            umask=0o077,
        )

    def prepare(self, deadline: float) -> None:
        """Create the directories and, once, the cluster; (re)write its configuration.

        Raises:
            PostgresNotInstalledError: the programs (or, when root, the ``postgres`` system
                user) are missing.
            LocalPostgresError: a directory is not as expected, the cluster was made by another
                PostgreSQL major version, or initdb failed.
        """
        self._prepare_dirs()
        if (self.cluster_dir / "PG_VERSION").is_file():
            self._check_cluster_version()
        else:
            self._initdb(deadline)
        self._write_config()
        self._remove_stale_socket_locks()

    def destroy(self) -> None:
        """Delete the cluster's files (see ``LocalPostgres.destroy``); no server may run."""
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

    # -- programs -----------------------------------------------------------------------------

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

    def _run(
        self,
        cmd: list[str],
        *,
        timeout: float = _CMD_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program (as ``postgres`` when root), capturing stdout+stderr as text.

        Never raises on exit codes; raises ``LocalPostgresError`` on timeouts and exec errors.
        """
        child = self.child()
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
                umask=child.umask,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalPostgresError(f"{' '.join(cmd)} timed out after {timeout:.0f}s") from exc
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
        result = self._run([self.program("postgres"), "--version"])
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
                self.program("initdb"),
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
        raise LocalPostgresError(f"initdb failed for {self.cluster_dir}:\n" + tail_lines(output))

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

    def _remove_stale_socket_locks(self) -> None:
        """Delete socket lock files (and sockets) in ``socket_dir`` whose pid is dead or a zombie.

        The server removes them itself when the pid is gone, but not while a killed postmaster
        that was not our child is still an unreaped zombie (PID 1 may reap orphans late or never).
        """
        for lock in self.socket_dir.glob(".s.PGSQL.*.lock"):
            pid = read_pid(lock)
            if pid is None or pid_alive(pid):
                continue
            log.info("removing stale socket lock %s (pid %d)", lock, pid)
            lock.unlink(missing_ok=True)
            lock.with_suffix("").unlink(missing_ok=True)


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
