"""scrapifie.local.process against real processes: a server dies with the process that started
it, and a pid file's process is signalled only when it is still the server it names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scrapifie.local.process import (
    parent_death_signal,
    pid_alive,
    read_pid,
    runs_as,
    terminate,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="Linux /proc and prctl"),
]

# A parent that starts `sleep` in a session of its own (as LocalKafka starts its JVM), with the
# parent-death signal armed, prints the child's pid and waits to be killed.
_PARENT = """
import signal, subprocess, sys, time
from scrapifie.local.process import parent_death_signal
child = subprocess.Popen(
    ["sleep", "300"], start_new_session=True, preexec_fn=parent_death_signal(signal.SIGTERM)
)
print(child.pid, flush=True)
time.sleep(300)
"""

# Sleeps until killed; ignores SIGTERM when asked to.
_SLEEPER = """
import signal, sys, time
if sys.argv[1] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(300)
"""


def _wait_gone(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _sleeper(
    tmp_path: Path, *args: str, name: str = "fakeserver", cwd: Path | None = None
) -> subprocess.Popen[str]:
    """The Python interpreter under another name (``comm`` is the executable's file name)."""
    exe = tmp_path / name
    if not exe.exists():
        exe.symlink_to(sys.executable)
    proc = subprocess.Popen(
        [str(exe), "-c", _SLEEPER, *args],
        cwd=cwd or tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    with proc.stdout:
        assert proc.stdout.readline().strip() == "ready"
    return proc


def test_child_dies_with_its_parent_even_in_its_own_session() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert pid_alive(child)
        parent.kill()
        parent.wait()
        assert _wait_gone(child), f"sleep {child} outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def test_no_parent_death_signal_from_a_worker_thread() -> None:
    """The signal follows the thread that forked: a worker thread's child would be killed
    when that thread ends, so none is armed there."""
    assert parent_death_signal(signal.SIGTERM) is not None
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(parent_death_signal(signal.SIGTERM)))
    worker.start()
    worker.join()
    assert result == [None]


def test_runs_as_names_only_the_server_the_pid_file_meant(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    proc = _sleeper(tmp_path, "props", cwd=work)
    try:
        assert runs_as(proc.pid, name="fakeserver", cwd=work, argument="props")
        # A recycled pid: another program, another directory, another command line.
        assert not runs_as(proc.pid, name="java", cwd=work, argument="props")
        assert not runs_as(proc.pid, name="fakeserver", cwd=tmp_path, argument="props")
        assert not runs_as(proc.pid, name="fakeserver", cwd=work, argument="other")
        assert not runs_as(proc.pid, name="fakeserver", cwd=work, argument="prop")
    finally:
        proc.kill()
        proc.wait()
    assert not runs_as(proc.pid, name="fakeserver", cwd=work, argument="props")


def test_terminate_escalates_to_sigkill(tmp_path: Path) -> None:
    polite = _sleeper(tmp_path, "-")
    stubborn = _sleeper(tmp_path, "ignore-term")
    try:
        assert terminate(polite.pid, timeout_s=10)
        assert polite.wait(5) == -signal.SIGTERM
        started = time.monotonic()
        assert terminate(stubborn.pid, timeout_s=0.5)
        assert stubborn.wait(5) == -signal.SIGKILL
        assert time.monotonic() - started >= 0.5
        assert terminate(stubborn.pid, timeout_s=0.5)  # already gone
    finally:
        for proc in (polite, stubborn):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_read_pid(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    assert read_pid(path) is None
    for text, pid in (("123\n", 123), ("42\n/data\n", 42), ("", None), ("x\n", None)):
        path.write_text(text)
        assert read_pid(path) == pid
    path.write_text("0\n")
    assert read_pid(path) is None
    path.write_text(f"{os.getpid()}")
    assert read_pid(path) == os.getpid()
