"""One lifecycle for the servers the local runners start (Kafka broker, PostgreSQL).

``LocalServer`` owns what every runner does the same way: clearing a server left running on the
data dir, starting the server as our child in a session of its own with its output appended to
a log file, waiting until it serves, stopping it (and reaping it), and stopping at interpreter
exit what was not stopped. A subclass fills in what is specific to its server:

* ``_prepare(deadline)``: tools, configuration and storage; returns the command line to run;
* ``_child()``: the server process's environment, working directory and credentials;
* ``_wait_ready(deadline)``: returns once the server serves (a loop built on ``_wait_until``);
* ``pid_file`` and ``_is_server(pid)``: where the running server's pid is recorded, and whether
  a pid still names that server rather than a process that got the pid later;
* ``stop_signal`` and ``signals_group``: how the server is asked to shut down cleanly.

Why the server runs in a session of its own, and how it still does not outlive the process that
started it, is explained in ``scrapifie.local.process``.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self, TypeVar

from scrapifie.local.errors import LocalServerError
from scrapifie.local.process import parent_death_signal, read_pid, wait_exit

__all__ = ["LOG_TAIL_LINES", "ChildContext", "LocalServer", "NotReady", "tail_lines"]

log = logging.getLogger(__name__)

T = TypeVar("T")

LOG_TAIL_LINES = 40
_KILL_WAIT_S = 10.0
_LEFTOVER_STOP_TIMEOUT_S = 30.0

# Servers this process started and has not stopped or killed yet; stopped at interpreter exit,
# so that an aborted test run leaves no server behind (a server runs in its own session, so it
# does not receive the terminal's SIGINT). A SIGKILL skips this hook: then the parent-death
# signal, or the next start's check for a server left running, stops it.
_live: set[LocalServer] = set()
_live_lock = threading.Lock()


def _stop_leftovers() -> None:
    with _live_lock:
        servers = list(_live)
        _live.clear()
    for server in servers:
        log.warning("stopping local %s on %s left running at exit", server.name, server.data_dir)
        try:
            server._stop_at_exit()
        except Exception:
            log.exception("could not stop local %s on %s", server.name, server.data_dir)


atexit.register(_stop_leftovers)


def tail_lines(output: str | bytes, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a program's output (bytes decoded as UTF-8, leniently)."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    return "\n".join(text.splitlines()[-lines:])


class NotReady(Exception):
    """Raised by a readiness attempt: the server does not serve yet; the message says why."""


@dataclass(frozen=True)
class ChildContext:
    """Environment, working directory and credentials of a server process (``None``: ours)."""

    env: dict[str, str] | None = None
    cwd: Path | None = None
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None
    umask: int = -1


class LocalServer(abc.ABC):
    """A server on 127.0.0.1 that this process starts as its child, stops and reaps.

    Invariants:

    * At most one server process per instance. It runs in a session (process group) of its own,
      with stdout and stderr appended to ``log_file`` after a start banner; ``log_tail()`` reads
      what it wrote since the latest ``start()``.
    * It does not outlive this process: started from the main thread, it gets ``stop_signal``
      from the kernel if this process dies without stopping it (SIGKILL); one still running
      when the interpreter exits is stopped by an atexit hook (``_stop_at_exit``).
    * ``pid_file`` names the running server. ``start()`` first stops a server running on this
      data dir (one this instance started, or one an earlier, killed process left running:
      ``pid_file`` names a process ``_is_server`` recognises), and removes a pid file naming
      anything else: that server is dead, an unreaped zombie, or its pid was recycled.
    * ``start()`` returns only once ``_wait_ready`` has; if that fails the server is stopped
      (``_abort_start``) and the error carries the last lines of its log.
    * ``stop()`` and ``kill()`` act on the server this instance started; an instance that has
      none (never started, or already stopped) acts on the one ``pid_file`` names. They return
      once it has exited; our child is reaped, so no zombie is left even where PID 1 does not
      reap orphans. A server that is not our child counts as exited once it is a zombie.
    """

    name: ClassVar[str]
    """The server's short name in messages and in the log's start banner."""
    error: ClassVar[type[LocalServerError]] = LocalServerError
    """The error type raised for this server."""
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    """Asks the server to shut down cleanly; also its parent-death signal."""
    signals_group: ClassVar[bool] = True
    """Whether signals go to our child's whole process group, or to the server process alone
    (its own children then follow it by themselves, as PostgreSQL's backends do)."""
    owns_pid_file: ClassVar[bool] = False
    """Whether this runner writes ``pid_file`` (else the server writes it itself)."""
    poll_interval_s: ClassVar[float] = 0.25
    """The pause between two readiness attempts."""

    def __init__(self, *, data_dir: Path, port: int, log_file: Path) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        self.data_dir = data_dir.resolve()
        self.port = port
        self.log_file = log_file.resolve()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- hooks ---------------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def pid_file(self) -> Path:
        """The file whose first line is the running server's pid."""

    @abc.abstractmethod
    def _is_server(self, pid: int) -> bool:
        """Whether ``pid`` is a live server of this instance's kind on this data dir."""

    @abc.abstractmethod
    def _prepare(self, deadline: float) -> list[str]:
        """Check tools, write configuration, create storage; the command line to start."""

    @abc.abstractmethod
    def _wait_ready(self, deadline: float) -> None:
        """Return once the started server serves; raise ``error`` when it cannot."""

    def _child(self) -> ChildContext:
        """How the server process runs: by default as we do, working in ``data_dir``."""
        return ChildContext(cwd=self.data_dir)

    def _abort_start(self) -> None:
        """Stop a server that did not become ready."""
        self.stop()

    def _stop_at_exit(self) -> None:
        """Stop a server still running when the interpreter exits."""
        self.kill()

    # -- public API ----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        """Prepare and start the server; block until it is ready (see the class invariants).

        Raises:
            LocalServerError: (``error``) preparation failed, or the server exited or was not
                ready within ``timeout_s``; then the message includes the end of its log.
        """
        started = time.monotonic()
        deadline = started + timeout_s
        self._clear_leftover(deadline)
        self._spawn(self._prepare(deadline))
        try:
            self._wait_ready(deadline)
        except BaseException:
            self._abort_start()
            raise
        log.info(
            "local %s ready on %s in %.1fs", self.name, self.address, time.monotonic() - started
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server: ``stop_signal``, wait up to ``timeout_s``, then ``kill()``.

        Which server: see the class invariants. A no-op when there is none.
        """
        if not self._shutdown(self.stop_signal, timeout_s):
            log.warning(
                "local %s ignored %s for %.0fs; killing it",
                self.name,
                self.stop_signal.name,
                timeout_s,
            )
            self.kill()

    def kill(self, timeout_s: float = _KILL_WAIT_S) -> None:
        """SIGKILL the server without a clean shutdown (a crash, for fault tests) and wait up to
        ``timeout_s`` until it has exited. A no-op when there is none (see ``stop()``).

        Raises:
            LocalServerError: (``error``) it was still running ``timeout_s`` after SIGKILL.
        """
        if not self._shutdown(signal.SIGKILL, timeout_s):
            raise self.error(f"local {self.name} on {self.data_dir} survived SIGKILL")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines the server wrote to its log since the latest ``start()``."""
        try:
            with self.log_file.open("rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except OSError as exc:
            return f"<cannot read {self.log_file}: {exc}>"
        return tail_lines(data, lines)

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

    # -- for subclasses ------------------------------------------------------------------------

    def _child_pid(self) -> int | None:
        """Our child's pid while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _recorded_pid(self) -> int | None:
        """The pid ``pid_file`` names, if that is still the server (``_is_server``)."""
        pid = read_pid(self.pid_file)
        return pid if pid is not None and self._is_server(pid) else None

    def _running_pid(self) -> int | None:
        """The running server this instance acts on: its child while it has one (``None`` once
        that exited), else the one ``pid_file`` names (left running by an earlier process).

        An exited child is not replaced by the pid file's server: that may be a successor's.
        """
        proc = self._proc
        if proc is not None:
            return proc.pid if proc.poll() is None else None
        return self._recorded_pid()

    def _wait_until(self, attempt: Callable[[float], T], deadline: float, what: str) -> T:
        """``attempt(remaining_s)``'s result once it stops raising ``NotReady``.

        Raises:
            LocalServerError: (``error``) our child exited, or ``deadline`` passed; the message
                names ``what`` was awaited, the last reason it was not ready and the log tail.
        """
        last = "no attempt yet"
        while True:
            proc = self._proc
            code = proc.poll() if proc is not None else None
            if code is not None:
                raise self.error(
                    f"local {self.name} exited with code {code} before it was ready "
                    f"({what}: {last}); {self._log_tail_message()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.error(
                    f"local {self.name} on {self.address} not ready before the timeout "
                    f"({what}: {last}); {self._log_tail_message()}"
                )
            try:
                return attempt(remaining)
            except NotReady as exc:
                last = str(exc)
            time.sleep(self.poll_interval_s)

    def _log_tail_message(self) -> str:
        return f"last {LOG_TAIL_LINES} lines of {self.log_file}:\n{self.log_tail()}"

    # -- lifecycle -----------------------------------------------------------------------------

    def _clear_leftover(self, deadline: float) -> None:
        """Stop the server running on this data dir (it may run an old configuration), then
        remove a stale pid file."""
        if self._proc is not None and self._child_pid() is None:
            self._forget()  # our child exited: look for a server on the data dir instead
        pid = self._running_pid()
        if pid is not None:
            log.warning(
                "stopping local %s pid %d already running on %s", self.name, pid, self.data_dir
            )
            remaining = deadline - time.monotonic()
            self.stop(timeout_s=max(1.0, min(_LEFTOVER_STOP_TIMEOUT_S, remaining)))
        if self.pid_file.exists():
            log.info("removing stale %s (pid %s)", self.pid_file, read_pid(self.pid_file))
            self.pid_file.unlink(missing_ok=True)

    def _spawn(self, cmd: list[str]) -> None:
        """Start ``cmd`` as our child in a session of its own, output appended to ``log_file``.

        The log file is opened here (by us), so it may live where the server's user could not
        open it, e.g. inside a root-only directory.
        """
        child = self._child()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            out.write(f"\n=== scrapifie local {self.name} start {time.ctime()} ===\n".encode())
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
                    umask=child.umask,
                    start_new_session=True,
                    # A clean shutdown if we die without stopping it (scrapifie.local.process).
                    preexec_fn=parent_death_signal(self.stop_signal),  # noqa: PLW1509
                )
            except OSError as exc:
                raise self.error(f"cannot run {cmd[0]}: {exc}") from exc
        self._proc = proc
        with _live_lock:
            _live.add(self)
        if self.owns_pid_file:
            self.pid_file.write_text(f"{proc.pid}\n")
        log.info(
            "started local %s pid %d on %s (log %s)",
            self.name,
            proc.pid,
            self.address,
            self.log_file,
        )

    def _shutdown(self, sig: signal.Signals, timeout_s: float) -> bool:
        """Send ``sig`` to the server running on this data dir and wait up to ``timeout_s`` for
        it to exit; whether it has (or none was running)."""
        pid = self._running_pid()
        if pid is None:
            self._forget()
            return True
        self._send(pid, sig)
        if not self._wait_gone(pid, timeout_s):
            return False
        proc = self._proc
        status = proc.returncode if proc is not None and proc.pid == pid else "not our child"
        log.info("local %s pid %d exited after %s (%s)", self.name, pid, sig.name, status)
        self._forget()
        return True

    def _send(self, pid: int, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None or proc.pid != pid or proc.returncode is not None:
            # Not our child: the caller identified it (_recorded_pid) just before.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        elif not self.signals_group:
            proc.send_signal(sig)
        else:
            # Our child, not reaped yet: its pid (= its group id) cannot have been reused.
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError:
                proc.send_signal(sig)

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        proc = self._proc
        if proc is not None and proc.pid == pid:
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True
        return wait_exit([pid], time.monotonic() + timeout_s)

    def _forget(self) -> None:
        """Drop our (exited) child and, if we write it, a pid file naming no live server (it
        may name a successor's)."""
        with _live_lock:
            _live.discard(self)
        self._proc = None
        if self.owns_pid_file and self._recorded_pid() is None:
            with contextlib.suppress(OSError):
                self.pid_file.unlink()
