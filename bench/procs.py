"""Process accounting from /proc (Linux): peak RSS, CPU time of a process tree."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_bytes(pid: int) -> int | None:
    """The process's high-water mark of resident memory (VmHWM), or None if it is gone."""
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else kib * 1024


def rss_bytes(pid: int) -> int | None:
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else kib * 1024


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may contain spaces and parentheses).
    return raw[raw.rindex(")") + 2 :].split()


def _ppids() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                out[int(entry)] = int(fields[1])
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    parents = _ppids()
    found, frontier = [pid], [pid]
    while frontier:
        nxt = [p for p, pp in parents.items() if pp in frontier]
        found += nxt
        frontier = nxt
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds consumed so far by these processes (those still alive)."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def system_busy_seconds() -> float:
    """CPU seconds all CPUs have spent busy (not idle or iowait) since boot, from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields[:8]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / _TICK


def machine_busy_pct(seconds: float = 1.0) -> float:
    """Percent of one core the whole machine used over the next ``seconds`` (blocks)."""
    before = system_busy_seconds()
    time.sleep(seconds)
    return round(100 * (system_busy_seconds() - before) / seconds, 1)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


@dataclass
class CpuMeter:
    """CPU use of named process trees over a window: ``start()``, work, ``stop()`` → % of a core.

    Trees are resolved at ``start()`` (children started later are not counted); a process that
    exits inside the window loses its CPU time, so measure only steady processes.
    """

    roots: Mapping[str, int | None]
    single: frozenset[str] = frozenset()  # names counted without their descendants
    _pids: dict[str, list[int]] = field(default_factory=dict)
    _before: dict[str, float] = field(default_factory=dict)
    _system: float = 0.0
    _t0: float = 0.0

    def start(self) -> None:
        self._pids = {
            name: [pid] if name in self.single else tree(pid)
            for name, pid in self.roots.items()
            if pid is not None
        }
        self._before = {name: cpu_seconds(p) for name, p in self._pids.items()}
        self._system = system_busy_seconds()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        """Percent of one core used by each tree since ``start()`` (200 = both cores here),
        plus ``machine`` (every process) and ``others`` (the machine less our trees)."""
        wall = max(time.monotonic() - self._t0, 1e-9)
        out = {
            name: round(100 * (cpu_seconds(p) - self._before[name]) / wall, 1)
            for name, p in self._pids.items()
        }
        machine = round(100 * (system_busy_seconds() - self._system) / wall, 1)
        out["machine"] = machine
        out["others"] = round(max(machine - sum(v for k, v in out.items() if k != "machine"), 0), 1)
        return out
