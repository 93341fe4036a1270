"""Servers the local runners start (Kafka broker, PostgreSQL) and must not leave behind.

Both servers run in a session of their own, so that Ctrl-C in a terminal reaches only the
runner, which then stops its workers before the database and the broker. The price: a SIGKILL
of the runner's process group (a closed terminal, the OOM killer, ``kill -9 -<pgid>``) does not
reach them, and they keep their ports and storage locks, so the next start fails. Two defences,
each covering the other's gap:

* ``parent_death_signal``: the kernel signals the server when the process that started it dies
  (Linux ``PR_SET_PDEATHSIG``). It cannot help when the server ignores or outlives the signal,
  and it is not armed everywhere (see its docstring).
* a pid file and an identity check (``runs_as``): the next start reads the pid its predecessor
  left in the data dir, checks that this pid still names that server (not a recycled pid), and
  stops it (``scrapifie.local.server.LocalServer``; ``terminate`` does the same for a caller
  holding only a pid).

Process inspection reads Linux ``/proc``; elsewhere the helpers degrade as documented.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "child_pids",
    "parent_death_signal",
    "pid_alive",
    "proc_comm",
    "proc_stat",
    "read_pid",
    "runs_as",
    "terminate",
    "wait_exit",
]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_EXIT_POLL_S = 0.02


def parent_death_signal(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` making the child receive ``sig`` when we die.

    ``None`` (start the child without it) off Linux and when called from a thread other than the
    main thread: the kernel sends the signal when the *thread* that forked the child exits, and
    only the main thread lives as long as the process. A server started from a worker thread
    (``asyncio.to_thread``, a thread pool) would otherwise be stopped when that thread ends.

    The signal survives ``execve`` and is armed after ``Popen``'s ``user=``/``group=`` switch
    (a credential change clears it). The function runs in the forked child before ``exec``,
    which is why ruff flags ``preexec_fn`` (PLW1509: in a threaded parent, code in the child can
    deadlock on a lock another thread held at fork). It is safe here because it only calls a
    ``prctl`` resolved beforehand and ``getppid``: it takes no lock and imports nothing.
    """
    if sys.platform != "linux":
        return None
    if threading.current_thread() is not threading.main_thread():
        log.debug("not arming a parent-death signal: called from a non-main thread")
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # no libc prctl to call
        return None
    # prctl(int option, unsigned long arg2, ...): spelled out so that arg2 is passed whole.
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def arm() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # The parent may have died between fork and prctl; then no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)

    return arm


def read_pid(path: Path) -> int | None:
    """The pid on the first line of ``path``; ``None`` if missing or not a positive number."""
    try:
        pid = int(path.read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def runs_as(pid: int, *, name: str, cwd: Path, argument: str) -> bool:
    """Whether ``pid`` is a live ``name`` process working in ``cwd`` with ``argument`` on its
    command line: the server a pid file names, not a process that got its pid later.

    ``False`` when ``/proc`` cannot tell (not Linux, or not ours to inspect): never signal a
    process we cannot identify.
    """
    if not pid_alive(pid) or proc_comm(pid) != name:
        return False
    try:
        workdir = os.readlink(f"/proc/{pid}/cwd")
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return Path(workdir) == cwd and os.fsencode(argument) in args


def terminate(pid: int, timeout_s: float, kill_wait_s: float = 10.0) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout_s``, then SIGKILL it; whether it is gone.

    For a process that is not our child (we cannot reap it; a zombie counts as gone). The
    caller must have identified it (``runs_as``) just before.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    if wait_exit([pid], time.monotonic() + timeout_s):
        return True
    log.warning("pid %d ignored SIGTERM for %.0fs; killing it", pid, timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return wait_exit([pid], time.monotonic() + kill_wait_s)


def proc_stat(pid: int) -> tuple[str, int] | None:
    """``(state, ppid)`` from ``/proc/<pid>/stat``, or ``None`` if unavailable."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[1])
    except (IndexError, ValueError):
        return None


def proc_comm(pid: int) -> str | None:
    """The process name (``/proc/<pid>/comm``), or ``None`` if unavailable."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if not Path("/proc/self/stat").exists():
        return True
    info = proc_stat(pid)
    return info is not None and info[0] != "Z"


def child_pids(pid: int) -> list[int]:
    """The live children of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children = []
    for entry in Path("/proc").glob("[0-9]*"):
        child = int(entry.name)
        info = proc_stat(child)
        if info is not None and info[1] == pid and info[0] != "Z":
            children.append(child)
    return children


def wait_exit(pids: list[int], deadline: float) -> bool:
    """Poll until none of ``pids`` is alive (zombies count as exited) or ``deadline``."""
    while True:
        if not any(pid_alive(pid) for pid in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_EXIT_POLL_S)
