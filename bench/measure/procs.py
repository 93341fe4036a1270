"""Process accounting from /proc (Linux): peak RSS, CPU time and memory (RSS, PSS) of a process
tree."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _stat(pid: int, path: Path | None = None) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` (or of another stat file, e.g. a thread's)."""
    try:
        raw = (path or Path(f"/proc/{pid}/stat")).read_text()
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


def _ticks(fields: list[str]) -> int:
    """User + system CPU time, in clock ticks, of a ``_stat`` result."""
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds consumed so far by these processes (those still alive)."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            total += _ticks(fields)
    return total / _TICK


def jit_cpu_seconds(pid: int) -> float:
    """CPU seconds the JVM ``pid`` has spent in its JIT compiler threads (HotSpot names them
    ``C1 CompilerThre…`` and ``C2 CompilerThre…``); 0 when it is gone."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if "CompilerThre" not in (task / "comm").read_text():
                continue
        except OSError:
            continue
        fields = _stat(pid, task / "stat")
        if fields is not None:
            total += _ticks(fields)
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


def host_probe_ms(loops: int = 200_000, runs: int = 3) -> float:
    """CPU ms a fixed pure-Python loop takes (the best of ``runs``): how fast this machine runs
    us right now. On a shared host it varies by tens of percent from minute to minute, which no
    count of idle CPU shows; every figure measured at the same time moves with it."""
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        total = 0
        for i in range(loops):
            total += i
        best = min(best, time.process_time() - start)
    return round(best * 1000, 2)


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


def pss_bytes(pid: int) -> int | None:
    """Proportional set size (shared pages split between their users), or None if gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def process_label(pid: int) -> str:
    """A short name for a process: Chromium's process type, ``python -m`` module and
    subcommand (``scrapifie worker``, ``bench``), else the program's name."""
    args = cmdline(pid)
    if not args:
        return "?"
    if is_chromium(args):
        kind = next((a[7:] for a in " ".join(args).split() if a.startswith("--type=")), "browser")
        return f"chromium {kind}"
    prog = args[0].rsplit("/", 1)[-1].split(" ", 1)[0]
    if prog.startswith("python") and "-m" in args[:-1]:
        rest = args[args.index("-m") + 1 :]
        return " ".join(rest[:2]) if rest[0] == "scrapifie" and len(rest) > 1 else rest[0]
    if prog == "java":
        return "java " + next((a for a in reversed(args) if not a.startswith("-")), "")[-40:]
    return prog


def is_chromium(args: list[str]) -> bool:
    """Chromium's browser or one of its helpers (which rewrite argv into one string)."""
    return bool(args) and "chromium" in args[0].rsplit("/", 1)[-1].split(" ", 1)[0]


def is_chromium_browser(args: list[str]) -> bool:
    """The Chromium *browser* process (helpers carry ``--type=``)."""
    return is_chromium(args) and "--type=" not in " ".join(args)


@dataclass
class TreeSample:
    t: float  # seconds since the sampler started
    rss: dict[str, int]  # by role: root, driver (Playwright's node), chromium, other
    pss: dict[str, int] | None  # None: not read this time
    chromium_processes: int
    browsers: frozenset[int]  # Chromium browser pids alive


class TreeSampler:
    """Samples the memory of a process tree (a worker and its Playwright driver and Chromium
    processes) from a thread, every ``interval_s``: RSS and PSS summed by role.

    RSS counts pages shared between Chromium's processes once per process (an overestimate of
    the tree); PSS splits shared pages between their users (what the tree really costs).
    Reading ``smaps_rollup`` is not cheap (~20-150 ms for a Chromium tree: the kernel walks
    every mapping), so PSS is read every ``pss_every_s`` (and at the end) and RSS every sample.
    """

    def __init__(self, root: int, interval_s: float = 0.5, pss_every_s: float = 5.0) -> None:
        self.root = root
        self.interval_s = interval_s
        self.pss_every_s = pss_every_s
        self._last_pss = -1e9
        self.samples: list[TreeSample] = []
        self.browsers_seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._t0 = 0.0
        self._roles: dict[int, str] = {}
        # CPU seconds of each process (by pid and start time) when first and last seen; a
        # process's time after its last sample is not counted (renderers come and go).
        self._cpu_first: dict[tuple[int, str], float] = {}
        self._cpu_last: dict[tuple[int, str], tuple[str, float]] = {}

    def _role(self, pid: int) -> str:
        if pid == self.root:
            return "root"
        role = self._roles.get(pid)
        if role is None:
            args = cmdline(pid)
            if is_chromium(args):
                role = "chromium"
                if is_chromium_browser(args):
                    self.browsers_seen.add(pid)
            elif args and "node" in args[0].rsplit("/", 1)[-1]:
                role = "driver"
            else:
                role = "other"
            self._roles[pid] = role
        return role

    def sample(self, pss: bool | None = None) -> TreeSample | None:
        """One sample now (PSS too if ``pss``; None: if ``pss_every_s`` has passed)."""
        pids = tree(self.root)
        if rss_bytes(self.root) is None:
            return None
        now = time.monotonic()
        with_pss = pss if pss is not None else now - self._last_pss >= self.pss_every_s
        if with_pss:
            self._last_pss = now
        rss: dict[str, int] = {"root": 0, "driver": 0, "chromium": 0, "other": 0}
        pss_by_role = dict.fromkeys(rss, 0)
        browsers = set()
        n_chromium = 0
        for pid in pids:
            role = self._role(pid)
            fields = _stat(pid)
            if fields is not None:
                key = (pid, fields[19])
                cpu = _ticks(fields) / _TICK
                self._cpu_first.setdefault(key, cpu)
                self._cpu_last[key] = (role, cpu)
            rss[role] += rss_bytes(pid) or 0
            if with_pss:
                pss_by_role[role] += pss_bytes(pid) or 0
            if role == "chromium":
                n_chromium += 1
                if pid in self.browsers_seen:
                    browsers.add(pid)
        s = TreeSample(
            round(now - self._t0, 2),
            rss,
            pss_by_role if with_pss else None,
            n_chromium,
            frozenset(browsers),
        )
        self.samples.append(s)
        return s

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds each role used while sampled (first to last sample of each process)."""
        out = {"root": 0.0, "driver": 0.0, "chromium": 0.0, "other": 0.0}
        for key, (role, last) in self._cpu_last.items():
            out[role] += last - self._cpu_first[key]
        return {role: round(seconds, 2) for role, seconds in out.items()}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def stop(self) -> dict[str, object]:
        """Stop sampling; a summary: peaks and last values of the tree's sums (bytes)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample(pss=True)  # the state at the end (the tree is still running)
        return self.summary()

    def summary(self) -> dict[str, object]:
        if not self.samples:
            return {"samples": 0}

        def total(d: dict[str, int], roles: tuple[str, ...]) -> int:
            return sum(d[r] for r in roles)

        everything = ("root", "driver", "chromium", "other")
        browser_side = ("driver", "chromium")
        last = self.samples[-1]
        out: dict[str, object] = {
            "samples": len(self.samples),
            "seconds": last.t,
            "peak_rss_bytes": {
                "root": max(s.rss["root"] for s in self.samples),
                "driver": max(s.rss["driver"] for s in self.samples),
                "chromium_tree": max(s.rss["chromium"] for s in self.samples),
                "all": max(total(s.rss, everything) for s in self.samples),
            },
            "final_rss_bytes": {
                "root": last.rss["root"],
                "chromium_tree": last.rss["chromium"],
                "all": total(last.rss, everything),
            },
            "max_chromium_processes": max(s.chromium_processes for s in self.samples),
            "max_browsers_at_once": max(len(s.browsers) for s in self.samples),
            "browsers_seen": len(self.browsers_seen),
            "cpu_seconds_by_role": self.cpu_by_role(),
        }
        with_pss = [(s.t, s.pss) for s in self.samples if s.pss is not None]
        if with_pss:
            pss = [p for _, p in with_pss]
            out["pss_samples"] = len(pss)
            out["peak_pss_bytes"] = {
                "root": max(p["root"] for p in pss),
                "browser_side": max(total(p, browser_side) for p in pss),
                "chromium_tree": max(p["chromium"] for p in pss),
                "all": max(total(p, everything) for p in pss),
            }
            if last.pss is not None:
                out["final_pss_bytes"] = {
                    "root": last.pss["root"],
                    "chromium_tree": last.pss["chromium"],
                    "all": total(last.pss, everything),
                }
            # Bounded or growing? The peak of the tree's PSS in each half of the run (by time).
            mid = last.t / 2
            first = [total(p, everything) for t, p in with_pss if t < mid]
            second = [total(p, everything) for t, p in with_pss if t >= mid]
            if first and second:
                out["peak_pss_all_by_half"] = [max(first), max(second)]
            out["pss_series"] = [[t, total(p, everything)] for t, p in with_pss][:200]
        return out


class OthersMeter:
    """How busy the machine was with work that is not ours over a window (% of one core).

    A thread reads every process's CPU time every ``interval_s``; a process counts as ours
    while it is in the tree of one of ``roots`` (this process, Kafka, PostgreSQL...). Chromium
    starts and ends a renderer per page and does not leave their time to its own (``cutime``),
    so processes are followed while they live: what a process used after its last sample is
    lost, for ours and others alike (``unseen``: the machine's busy time nobody was seen using,
    the kernel's included).
    """

    def __init__(self, roots: list[int], interval_s: float = 0.5) -> None:
        self.roots = roots
        self.interval_s = interval_s
        self._base: dict[tuple[int, str], float] = {}  # (pid, start time) -> CPU at start
        self._last: dict[tuple[int, str], float] = {}
        self._ours: set[tuple[int, str]] = set()
        self._labels: dict[tuple[int, str], str] = {}  # ours: what each process is
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._system = 0.0
        self._t0 = 0.0

    def _sample(self) -> dict[tuple[int, str], float]:
        parents: dict[int, int] = {}
        cpu: dict[tuple[int, str], float] = {}
        keys: dict[int, tuple[int, str]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _stat(int(entry))
                if fields is None:
                    continue
                pid = int(entry)
                key = (pid, fields[19])  # starttime: a reused pid is another process
                parents[pid] = int(fields[1])
                keys[pid] = key
                cpu[key] = _ticks(fields) / _TICK
        frontier = [r for r in self.roots if r in keys]
        ours = set(frontier)
        while frontier:
            nxt = [p for p, pp in parents.items() if pp in frontier and p not in ours]
            ours.update(nxt)
            frontier = nxt
        for p in ours:
            if keys[p] not in self._labels:
                self._labels[keys[p]] = process_label(p)
        self._ours.update(keys[p] for p in ours)
        self._last.update(cpu)
        return cpu

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> None:
        self._base = self._sample()
        self._system = system_busy_seconds()
        self._t0 = time.monotonic()
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self._sample()
        wall = max(time.monotonic() - self._t0, 1e-9)
        machine = 100 * (system_busy_seconds() - self._system) / wall
        used = {k: v - self._base.get(k, 0.0) for k, v in self._last.items()}
        ours = 100 * sum(v for k, v in used.items() if k in self._ours) / wall
        others = 100 * sum(v for k, v in used.items() if k not in self._ours) / wall
        by_label: dict[str, float] = {}
        for k, v in used.items():
            if k in self._ours:
                label = self._labels.get(k, "?")
                by_label[label] = by_label.get(label, 0.0) + 100 * v / wall
        return {
            "machine": round(machine, 1),
            "ours": round(ours, 1),
            "others": round(others, 1),
            "unseen": round(max(machine - ours - others, 0.0), 1),
            "ours_by_process": {
                label: round(pct, 1)
                for label, pct in sorted(by_label.items(), key=lambda kv: -kv[1])
                if pct >= 0.5
            },
        }
