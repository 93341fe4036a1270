"""Profiling the http worker under load, and a summary of where its CPU goes.

Two profilers, one summary:

* py-spy (if installed: ``pip install py-spy``) attaches to the running worker for the load
  window only and samples active stacks (idle waits are not sampled): the CPU view.
* pyinstrument (the ``bench`` extra) runs the worker under ``python -m pyinstrument`` for its
  whole life; samples in the event loop's idle ``select`` and in imports (start-up) are dropped.

Both become ``(stack, weight)`` pairs, summarised as self time by library ("category"), the
share of samples in which a library appears at all (inclusive), the hottest functions by self
time, and our own functions by inclusive time.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Frame = tuple[str, str, int]  # function, file, line
Stacks = list[tuple[list[Frame], float]]

_PYSPY_FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
_OURS = ("streams", "schemas", "connectors", "scrapifie", "bench")
# Entry points present in every sample of the main thread: no information in their share.
_ENTRY_FILES = ("scrapifie/__main__.py", "scrapifie/cli.py")


def pyspy_binary() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


def pyinstrument_available() -> bool:
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        return False
    return True


def choose(profiler: str) -> str | None:
    """Resolve ``auto`` (py-spy, else pyinstrument); None when the one asked for is missing."""
    if profiler == "none":
        return None
    if profiler in ("auto", "py-spy") and pyspy_binary():
        return "py-spy"
    if profiler in ("auto", "pyinstrument") and pyinstrument_available():
        return "pyinstrument"
    return None


def pyinstrument_wrapper(out: Path) -> list[str]:
    """Arguments placed between ``python`` and ``-m scrapifie`` to run under pyinstrument."""
    return ["-m", "pyinstrument", "-r", "pyisession", "-o", str(out), "--interval", "0.001"]


class PySpy:
    """``py-spy record`` attached to ``pid`` until ``stop()`` (SIGINT makes it write the file)."""

    def __init__(self, pid: int, out: Path, rate_hz: int = 200) -> None:
        binary = pyspy_binary()
        if binary is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.out = out
        self._log = out.with_suffix(".log")
        with open(self._log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(rate_hz),
                    "--format",
                    "raw",
                    "--full-filenames",
                    "--nonblocking",
                    "--output",
                    str(out),
                ],
                stdout=log,
                stderr=log,
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.out.exists():
            raise RuntimeError(f"py-spy wrote no profile: {self._log.read_text(errors='replace')}")
        self._log.unlink(missing_ok=True)


def load_pyspy(path: Path) -> Stacks:
    stacks: Stacks = []
    for line in path.read_text(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        frames: list[Frame] = []
        for raw in head.split(";"):
            m = _PYSPY_FRAME.match(raw)
            if m:
                frames.append((m["fn"], m["file"], int(m["line"] or 0)))
            else:
                frames.append((raw, "", 0))
        if frames and not _idle_or_import(frames):
            stacks.append((frames, float(count)))
    return stacks


def _idle_or_import(frames: list[Frame]) -> bool:
    """The event loop waiting in epoll (py-spy does not always see it as idle), or an import
    (start-up): neither is the work we profile."""
    leaf_fn, leaf_file, _ = frames[-1]
    if (leaf_fn.rsplit(".", 1)[-1], Path(leaf_file).name or leaf_file) in _IDLE:
        return True
    return any(f.startswith("<frozen importlib") for _, f, _ in frames)


_IDLE = {("select", "selectors.py"), ("poll", "<built-in>"), ("poll", "selectors.py")}
_SKIP_FILES = ("<thread>", "<string>")


def load_pyinstrument(path: Path) -> Stacks:
    """Stacks of a pyinstrument session without idle samples (the event loop waiting in
    epoll), import samples (start-up) and pyinstrument's own frames."""
    data = json.loads(path.read_text())
    stacks: Stacks = []
    for call_stack, seconds in data["frame_records"]:
        frames: list[Frame] = []
        for info in call_stack:
            ident = info.split("\x01", 1)[0]
            parts = ident.split("\x00")
            fn = parts[0]
            file = parts[1] if len(parts) > 1 else ""
            line = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
            if (fn.startswith("[") and fn.endswith("]")) or file in _SKIP_FILES:
                continue  # synthetic frames ([self], [await], ...), thread roots
            if "/pyinstrument/" in file:
                continue
            frames.append((fn, file, line))
        if frames and not _idle_or_import(frames):
            stacks.append((frames, float(seconds)))
    return stacks


def pyinstrument_html(session_file: Path) -> Path:
    """Render a saved pyinstrument session as HTML next to it (for people)."""
    from pyinstrument.renderers import HTMLRenderer
    from pyinstrument.session import Session

    html = session_file.with_suffix(".html")
    html.write_text(HTMLRenderer().render(Session.load(session_file)))
    return html


def category(file: str, repo: Path) -> str:
    """Library of a source file: a site-packages distribution, a stdlib module, or our package."""
    if not file:
        return "?"
    if file.startswith("<frozen"):  # "<frozen runpy>", "<frozen importlib._bootstrap>"
        module = file.removeprefix("<frozen ").rstrip(">")
        return "import" if module.startswith("importlib") else f"stdlib {module}"
    if "site-packages/" in file:
        top = file.split("site-packages/", 1)[1].split("/", 1)[0]
        return top.removesuffix(".py").split(".")[0]
    with contextlib.suppress(ValueError):
        rel = Path(file).resolve().relative_to(repo)
        if rel.parts and rel.parts[0] in _OURS:
            return f"{rel.parts[0]} (ours)"
    m = re.search(r"/python3\.\d+/(.+)$", file)
    if m:
        return "stdlib " + m[1].split("/", 1)[0].removesuffix(".py")
    return Path(file).name.removesuffix(".py")


def _label(fn: str, file: str, repo: Path) -> str:
    short = file
    if "site-packages/" in file:
        short = file.split("site-packages/", 1)[1]
    else:
        with contextlib.suppress(ValueError):
            short = str(Path(file).resolve().relative_to(repo))
        m = re.search(r"/python3\.\d+/(.+)$", short)
        if m:
            short = m[1]
    return f"{fn} ({short})"


def summarize(stacks: Stacks, repo: Path, top: int = 15) -> dict[str, Any]:
    total = sum(w for _, w in stacks)
    if total <= 0:
        return {"samples": 0}
    self_cat: defaultdict[str, float] = defaultdict(float)
    incl_cat: defaultdict[str, float] = defaultdict(float)
    self_fn: defaultdict[str, float] = defaultdict(float)
    incl_ours: defaultdict[str, float] = defaultdict(float)
    for frames, w in stacks:
        fn, file, _ = frames[-1]
        if file == "<built-in>" and len(frames) > 1:
            # A C function (pyinstrument records them): its time belongs to its caller's library.
            cfn, cfile, _ = frames[-2]
            self_cat[category(cfile, repo)] += w
            self_fn[f"{fn} [C] in {_label(cfn, cfile, repo)}"] += w
        else:
            self_cat[category(file, repo)] += w
            self_fn[_label(fn, file, repo)] += w
        for cat in {category(f, repo) for _, f, _ in frames}:
            incl_cat[cat] += w
        for fn2, file2, _ in {(f, fl, 0) for f, fl, _ in frames}:
            if category(file2, repo).endswith("(ours)") and not file2.endswith(_ENTRY_FILES):
                incl_ours[_label(fn2, file2, repo)] += w

    def pct(c: dict[str, float], n: int) -> list[list[Any]]:
        ranked = sorted(c.items(), key=lambda kv: kv[1], reverse=True)[:n]
        return [[k, round(100 * v / total, 1)] for k, v in ranked]

    return {
        "samples": round(total, 3),
        "self_by_category_pct": pct(self_cat, top),
        "inclusive_by_category_pct": pct(incl_cat, top + 5),
        "top_self_functions_pct": pct(self_fn, top + 5),
        "top_inclusive_ours_pct": pct(incl_ours, top),
    }


def render_text(summary: dict[str, Any]) -> str:
    lines: list[str] = []
    titles = {
        "self_by_category_pct": "Self time by library (% of CPU samples)",
        "inclusive_by_category_pct": "Samples in which a library appears (% inclusive)",
        "top_self_functions_pct": "Hottest functions by self time (%)",
        "top_inclusive_ours_pct": "Our functions by inclusive time (%)",
    }
    for key, title in titles.items():
        rows: Iterable[list[Any]] = summary.get(key, [])
        lines.append(title)
        lines += [f"  {pct:5.1f}  {name}" for name, pct in rows]
        lines.append("")
    return "\n".join(lines)
