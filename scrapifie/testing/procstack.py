"""The ``scrapifie`` processes of a test or bench run: ``python -m scrapifie <args>`` started as a
user starts them (configured only through the environment), each writing to a log file of its
own, stopped with a signal and a deadline, and read through their logs and HTTP endpoints.

The one place that does this for the integration tests, the fault tests and the bench (which
must not import the tests), so it stays free of pytest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import httpx

__all__ = ["ProcStack", "base_env", "metric_sum", "spawn", "stop", "tail"]


def base_env() -> dict[str, str]:
    """The caller's environment without any SCRAPIFIE_ setting of its own: a child gets only the
    settings its stack gives it."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SCRAPIFIE_")}


def spawn(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    cwd: Path,
    wrapper: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start ``python [wrapper...] -m scrapifie <args>`` in ``cwd`` with exactly ``env``; its
    stdout and stderr are appended to ``log``."""
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, *wrapper, "-m", "scrapifie", *args],
            env=env,
            stdout=out,
            stderr=out,
            cwd=cwd,
        )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
    """Send ``sig`` to a running process and reap it; SIGKILL it if it has not exited after
    ``timeout_s``. A process that already exited is left as it is."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(log: Path, lines: int = 40, noise: Sequence[str] = ()) -> str:
    """The last ``lines`` lines of a log file, leaving out lines holding any of ``noise``
    (before counting); empty if the file cannot be read."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    if noise:
        text = [line for line in text if not any(n in line for n in noise)]
    return "\n".join(text[-lines:])


def metric_sum(port: int | str, name: str) -> float | None:
    """Sum of a Prometheus metric's samples on ``http://127.0.0.1:<port>/metrics``; None when
    the endpoint does not answer or has no sample of ``name``."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2, trust_env=False).text
    except httpx.HTTPError:
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    ]
    return sum(values) if values else None


@dataclass
class ProcStack:
    """Named ``scrapifie`` processes sharing a base environment ``env``, a log directory
    (``<logs>/<name>.log``, appended to across restarts) and a working directory ``cwd``.

    Invariants: ``procs`` holds the latest process started under each name, in the order the
    names were first started; a stopped or killed process stays there (``alive()`` false, its
    exit status readable) until its name is started again, which counts in ``restarts``.
    ``start(name)`` without arguments restarts it with the arguments and variables it was last
    started with.
    """

    env: dict[str, str]
    logs: Path
    cwd: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    proc_env: dict[str, dict[str, str]] = field(default_factory=dict)

    # ``log_tail``: these logs come first (in this order, the rest by name), and lines holding
    # any of ``tail_noise`` are left out.
    tail_first: ClassVar[tuple[str, ...]] = ()
    tail_noise: ClassVar[tuple[str, ...]] = ()

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start (or restart, with the same arguments and variables) process ``name``; ``env``
        adds variables of its own to the stack's ``env``."""
        args = args or self.commands[name]
        self.commands[name] = args
        if env is not None:
            self.proc_env[name] = env
        proc = spawn(
            args,
            env={**self.env, **self.proc_env.get(name, {})},
            log=self.logs / f"{name}.log",
            cwd=self.cwd,
        )
        if name in self.procs:
            self.restarts[name] = self.restarts.get(name, 0) + 1
        self.procs[name] = proc
        return proc

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        """Signal process ``name`` and reap it (SIGKILL after ``timeout_s``)."""
        stop(self.procs[name], sig, timeout_s)

    def kill(self, name: str) -> None:
        """SIGKILL one process (no clean shutdown) and reap it."""
        self.stop(name, signal.SIGKILL)

    def stop_all(self, timeout_s: float = 30) -> None:
        """Stop every process, in the order their names were first started."""
        for name in list(self.procs):
            self.stop(name, timeout_s=timeout_s)

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of each process's log, each under a ``==== <file>`` heading."""
        first = self.tail_first

        def order(f: Path) -> tuple[int, str]:
            return (first.index(f.stem) if f.stem in first else len(first), f.name)

        return "\n".join(
            f"==== {f.name}\n" + tail(f, lines, self.tail_noise)
            for f in sorted(self.logs.glob("*.log"), key=order)
        )

    def wait_for(self, url: str, timeout_s: float = 60) -> None:
        """Return once ``url`` answers 200 (the gateway's ``/readyz``, a process's
        ``/metrics``). Raise, with the log tails, as soon as a process has exited, or when
        ``timeout_s`` has passed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}\n{self.log_tail()}")
            try:
                if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{url} not ready in {timeout_s}s\n{self.log_tail()}")
