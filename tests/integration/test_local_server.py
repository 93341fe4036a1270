"""LocalServer's lifecycle against a real, cheap server process: stop escalates and reaps, a
server that dies before it is ready is reported with its log, a server left running on the data
dir is stopped (and only that one), and one still running at interpreter exit is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scrapifie.local.errors import LocalServerError
from scrapifie.local.ports import free_port, port_accepts
from scrapifie.local.process import pid_alive, runs_as
from scrapifie.local.server import LocalServer, NotReady

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="Linux /proc and prctl"),
]

# Listens on argv[1]; argv[2] says how it behaves: "polite" exits on SIGTERM, "stubborn" ignores
# it, "crash" writes to its log and exits before listening.
_SERVER = """
import signal, socket, sys, time
if sys.argv[2] == "crash":
    print("boom: cannot start", flush=True)
    sys.exit(3)
if sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
print("listening", flush=True)
while True:
    time.sleep(1)
"""


class FakeServer(LocalServer):
    """A Python process named ``fakeserver`` listening on ``port``; ready once it accepts."""

    name = "fake"
    owns_pid_file = True
    poll_interval_s = 0.05

    def __init__(self, data_dir: Path, exe: Path, *, port: int, mode: str = "polite") -> None:
        super().__init__(data_dir=data_dir, port=port, log_file=data_dir / "fake.log")
        self.exe = exe
        self.mode = mode

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "fake.pid"

    @property
    def pid(self) -> int | None:
        return self._child_pid()

    def _is_server(self, pid: int) -> bool:
        return runs_as(pid, name="fakeserver", cwd=self.data_dir, argument=str(self.port))

    def _prepare(self, deadline: float) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [str(self.exe), "-c", _SERVER, str(self.port), self.mode]

    def _wait_ready(self, deadline: float) -> None:
        self._wait_until(self._accepts, deadline, "listening")

    def _accepts(self, remaining_s: float) -> None:
        if not port_accepts(self.port):
            raise NotReady("port closed")


@pytest.fixture
def exe(tmp_path: Path) -> Path:
    """The Python interpreter under another name (``comm`` is the executable's file name)."""
    path = tmp_path / "fakeserver"
    path.symlink_to(sys.executable)
    return path


def test_stop_escalates_to_sigkill_and_reaps(tmp_path: Path, exe: Path) -> None:
    server = FakeServer(tmp_path / "data", exe, port=free_port(), mode="stubborn")
    server.start(timeout_s=30)
    pid = server.pid
    assert pid is not None
    assert server.pid_file.read_text() == f"{pid}\n"
    started = time.monotonic()
    server.stop(timeout_s=0.5)
    assert time.monotonic() - started >= 0.5
    assert server.pid is None
    assert not Path(f"/proc/{pid}").exists()  # reaped, not a zombie
    assert not server.pid_file.exists()
    assert "listening" in server.log_tail()
    server.stop()  # idempotent


def test_a_server_that_dies_before_it_is_ready_is_reported_with_its_log(
    tmp_path: Path, exe: Path
) -> None:
    server = FakeServer(tmp_path / "data", exe, port=free_port(), mode="crash")
    with pytest.raises(LocalServerError, match="exited with code 3") as info:
        server.start(timeout_s=30)
    assert "boom: cannot start" in str(info.value)
    assert server.pid is None
    assert not server.pid_file.exists()


def test_start_stops_the_server_left_on_its_data_dir_and_only_that(
    tmp_path: Path, exe: Path
) -> None:
    port = free_port()
    first = FakeServer(tmp_path / "data", exe, port=port)
    first.start(timeout_s=30)
    left = first.pid
    assert left is not None
    successor = FakeServer(tmp_path / "data", exe, port=port)
    try:
        successor.start(timeout_s=30)
        assert successor.pid not in (None, left)
        assert not pid_alive(left)
        first.stop()  # reaps the first server
        assert successor.pid_file.read_text() == f"{successor.pid}\n"
    finally:
        successor.stop()
        first.stop()

    # A pid file naming a live process that is not the server: removed, the process untouched.
    successor.pid_file.write_text(f"{os.getpid()}\n")
    with successor:
        assert successor.pid is not None
    assert not successor.pid_file.exists()


# Starts a server and exits without stopping it (argv[5]: then sleeps, to be SIGKILLed).
_LEAVER = """
import sys, time
from pathlib import Path
from tests.integration.test_local_server import FakeServer
data, exe, port, mode, then = sys.argv[1:]
server = FakeServer(Path(data), Path(exe), port=int(port), mode=mode)
server.start(timeout_s=30)
print(server.pid, flush=True)
if then == "sleep":
    time.sleep(300)
"""


def _leaver(tmp_path: Path, exe: Path, port: int, mode: str, then: str) -> list[str]:
    return [sys.executable, "-c", _LEAVER, str(tmp_path / "data"), str(exe), str(port), mode, then]


def test_a_server_still_running_at_exit_is_stopped(tmp_path: Path, exe: Path) -> None:
    port = free_port()
    result = subprocess.run(
        _leaver(tmp_path, exe, port, "stubborn", "exit"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pid = int(result.stdout.split()[0])
    assert not pid_alive(pid)
    assert "left running at exit" in result.stderr
    assert not port_accepts(port)


def test_a_server_dies_with_the_sigkilled_process_that_started_it(
    tmp_path: Path, exe: Path
) -> None:
    """No atexit hook runs on SIGKILL: the kernel sends the server its ``stop_signal``."""
    parent = subprocess.Popen(
        _leaver(tmp_path, exe, free_port(), "polite", "sleep"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert pid_alive(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(pid), f"server {pid} outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
