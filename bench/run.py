"""``python -m bench``: the whole benchmark in one run (see bench/README.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import RESULTS_SCHEMA_VERSION
from bench.browser.tier import BrowserPlan, measure_browser
from bench.measure.procs import loadavg, machine_busy_pct
from bench.measure.progress import Progress
from bench.pipeline.target import HOSTS, SIZES, Nginx, build_corpus, nginx_binary
from bench.report import BROWSER_HEADLINE_CONCURRENCY, HEADLINE_CONCURRENCY, runs_text, write

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SUITES = ("raw", "scrapy", "browser", "hotpath", "e2e", "worker", "sinks", "fairness")


@dataclass(frozen=True)
class Config:
    mode: str
    pages: int
    sweep: list[int]  # concurrency of raw loops and Scrapy (the chart's x axis)
    raw_passes: dict[str, int]
    e2e_in_flight: list[int]  # worker max_in_flight per round; the first also measures latency
    e2e_workers: list[int]  # http worker processes; a count >1 adds a round at in_flight[0]
    warmup_jobs: int
    latency_jobs: int
    sink_pg_events: int  # results + as many metering events
    sink_object_events: int
    worker_alone_jobs: int  # jobs through the http worker alone, from a pre-filled topic
    profiler: str  # auto | py-spy | pyinstrument | none
    browser_pages: int  # URLs per browser measurement (raw loops and the tier)
    browser_sweep: list[int]  # browser concurrencies; the first is the goal's
    browser_memory_pages: int  # pages of the browser tier's memory run (0: none)
    browser_trials: int  # runs of the raw new-context loop and the tier at the goal's concurrency
    formats_trials: int  # e2e rounds with and without formats each; the goal compares medians
    suites: tuple[str, ...] = SUITES
    timeout_s: float = 300.0
    extra: dict[str, Any] = field(default_factory=dict)


FULL = Config(
    mode="full",
    pages=2000,
    sweep=[8, 32, 64, 128],
    raw_passes={"aiohttp": 3, "httpx": 1, "fetcher": 3},
    e2e_in_flight=[64, 8, 32, 128, 200],
    e2e_workers=[1, 2],
    warmup_jobs=1000,  # enough for the broker JVM to compile its hot paths first
    latency_jobs=200,
    sink_pg_events=50_000,
    sink_object_events=10_000,
    worker_alone_jobs=10_000,
    profiler="auto",
    browser_pages=200,
    browser_sweep=[BROWSER_HEADLINE_CONCURRENCY, 1, 8],
    browser_memory_pages=1000,
    browser_trials=3,
    formats_trials=3,
)
QUICK = replace(
    FULL,
    mode="quick",
    sweep=[8, 64],
    e2e_in_flight=[64, 200],
    warmup_jobs=300,
    latency_jobs=50,
    sink_pg_events=20_000,
    sink_object_events=3_000,
    worker_alone_jobs=4_000,
    profiler="none",
    browser_pages=40,
    browser_sweep=[BROWSER_HEADLINE_CONCURRENCY],
    browser_memory_pages=0,
    browser_trials=1,
    formats_trials=1,
)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a ~4 minute run (fewer points)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    p.add_argument("--pages", type=int, help="corpus size (default 2000)")
    p.add_argument("--sweep", type=_ints, help="concurrencies of raw loops and Scrapy: 8,32,64")
    p.add_argument("--in-flight", type=_ints, help="worker max_in_flight per e2e round: 64,200")
    p.add_argument(
        "--workers", type=_ints, help="http worker processes: 1,2 (2: a round more, 2 workers)"
    )
    p.add_argument("--browser-pages", type=int, help="pages per browser measurement (200)")
    p.add_argument(
        "--browser-sweep",
        type=_ints,
        help=f"browser concurrencies, the goal's first ({BROWSER_HEADLINE_CONCURRENCY},1,8)",
    )
    p.add_argument(
        "--browser-memory-pages",
        type=int,
        help="pages of the browser tier's memory run (default 1000; 0 skips it; quick: 0)",
    )
    p.add_argument(
        "--browser-trials",
        type=int,
        help="runs of the raw new-context loop and of the tier at the goal's concurrency, "
        "interleaved; the goal compares medians (default 3; quick: 1)",
    )
    p.add_argument(
        "--only", type=lambda s: tuple(s.split(",")), help=f"suites to run, of {','.join(SUITES)}"
    )
    p.add_argument(
        "--profiler",
        choices=["auto", "py-spy", "pyinstrument", "none"],
        help="profile the http worker under load (default: auto in full runs, none with --quick)",
    )
    p.add_argument(
        "--formats-trials",
        type=int,
        help="e2e rounds with formats and without each (alternating), the goal compares medians"
        " (default 3; quick: 1)",
    )
    p.add_argument(
        "--profile-formats",
        action="store_true",
        help="the profiled e2e round's jobs ask for the formats round's formats",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, corpus, data)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="S",
        help="first wait up to S seconds for the machine to be idle (other work skews results)",
    )
    return p


def _config(args: argparse.Namespace) -> Config:
    cfg = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    for name, key in (
        ("pages", "pages"),
        ("sweep", "sweep"),
        ("in_flight", "e2e_in_flight"),
        ("workers", "e2e_workers"),
        ("profiler", "profiler"),
        ("only", "suites"),
        ("browser_pages", "browser_pages"),
        ("browser_sweep", "browser_sweep"),
        ("browser_memory_pages", "browser_memory_pages"),
        ("browser_trials", "browser_trials"),
        ("formats_trials", "formats_trials"),
    ):
        if getattr(args, name) is not None:
            changes[key] = getattr(args, name)
    unknown = set(changes.get("suites", ())) - set(SUITES)
    if unknown:
        raise SystemExit(f"unknown suites {sorted(unknown)}; valid: {', '.join(SUITES)}")
    return replace(cfg, **changes)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = _config(args)
    progress = Progress()
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "schema": RESULTS_SCHEMA_VERSION,
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": cfg.mode,
        "config": {k: v for k, v in cfg.__dict__.items() if k != "extra"},
        "machine": _machine(),
        "errors": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="scrapifie-bench-"))
    # Library logs (aiokafka's start-up chatter, ...) go to a file; stderr has the progress line.
    logging.basicConfig(
        filename=workdir / "bench.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.wait_quiet:
        _wait_quiet(args.wait_quiet, progress)
    results["machine"]["before"] = {"loadavg": loadavg(), "busy_pct": machine_busy_pct(1.0)}
    t0 = time.monotonic()
    nginx: Nginx | None = None
    stack = None
    try:
        progress.phase(f"target: corpus of {cfg.pages:,} pages, nginx on {len(HOSTS)} addresses")
        nginx_binary()  # installs nginx when missing (as root), before any work
        results["machine"]["nginx"] = _nginx_version()  # known only once it is installed
        corpus = build_corpus(workdir / "corpus", cfg.pages)
        from scrapifie.local.ports import free_port

        nginx = Nginx(corpus, workdir / "nginx", free_port(), slow_port=free_port())
        nginx.start()
        urls = corpus.urls(nginx.port)
        slow_urls = corpus.urls(nginx.slow_port) if nginx.slow_port is not None else []
        urls_file = workdir / "urls.txt"
        urls_file.write_text("\n".join(urls) + "\n")
        with urllib.request.urlopen(urls[0], timeout=5) as resp:
            if resp.status != 200:
                raise RuntimeError(f"nginx answered {resp.status} for {urls[0]}")
        results["corpus"] = _corpus_info(corpus.sizes, corpus.total_bytes)

        def guarded(name: str, fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except Exception as exc:
                traceback.print_exc()
                results["errors"].append(f"{name}: {type(exc).__name__}: {exc}"[:2000])
                return None

        if "raw" in cfg.suites:
            results["raw"] = {}
            for client in ("aiohttp", "httpx", "fetcher"):
                rows = results["raw"][client] = []
                for conc in cfg.sweep:
                    progress.phase(f"raw {client} loop, {conc} in flight")
                    cmd = ["bench.peers.clients", "--client", client, "--concurrency", str(conc)]
                    cmd += ["--urls", str(urls_file), "--passes", str(cfg.raw_passes[client])]
                    r = guarded(f"raw {client} @{conc}", partial(_run_json, cmd))
                    if r:
                        rows.append(r)
                        progress.info(f"{r['pages_per_s']:,.0f} pages/s")
        if "scrapy" in cfg.suites:
            results["scrapy"] = []
            for conc in cfg.sweep:
                progress.phase(f"Scrapy, {conc} in flight, CONCURRENT_ITEMS=1")
                cmd = [
                    "bench.peers.scrapy_client",
                    "--concurrency",
                    str(conc),
                    "--urls",
                    str(urls_file),
                ]
                r = guarded(f"scrapy @{conc}", partial(_run_json, cmd))
                if r:
                    results["scrapy"].append(r)
                    progress.info(f"{r['pages_per_s']:,.0f} pages/s")
        if "hotpath" in cfg.suites:
            from bench.pipeline.hotpath import measure_hotpath

            progress.phase("worker hot path: CPU-bound steps per page, timed alone")
            results["hotpath"] = guarded("hotpath", partial(measure_hotpath, corpus))
        if {"e2e", "worker", "sinks", "browser", "fairness"} & set(cfg.suites):
            from bench.pipeline.stack import BenchStack, target_env

            progress.phase("starting Kafka (KRaft) and PostgreSQL")
            ports = [p for p in (nginx.port, nginx.slow_port) if p is not None]
            stack = BenchStack(workdir / "stack", target_env(list(HOSTS), *ports))
            results["worker_env_extra"] = stack.extra_env
            stack.start()
            from bench.measure.profile import choose

            profiler = choose(cfg.profiler)
            if cfg.profiler not in ("none", "auto") and profiler is None:
                results["errors"].append(f"profiler {cfg.profiler} is not installed")
            args.out.mkdir(parents=True, exist_ok=True)
            if "e2e" in cfg.suites:
                from bench.pipeline.e2e import E2EPlan, run_e2e

                plan = E2EPlan(
                    in_flight=cfg.e2e_in_flight,
                    workers=cfg.e2e_workers,
                    warmup_jobs=cfg.warmup_jobs,
                    latency_jobs=cfg.latency_jobs,
                    timeout_s=cfg.timeout_s,
                    profiler=profiler,
                    profile_stem=args.out / f"{stamp}-worker",
                    profile_formats=args.profile_formats,
                    formats_trials=cfg.formats_trials,
                    nginx_pid=nginx.pid,
                    # The RSS goal's round: 200 fetches really in flight (slow responses).
                    memory_urls=slow_urls if 200 in cfg.e2e_in_flight else [],
                )
                results["e2e"] = guarded(
                    "e2e", lambda: asyncio.run(run_e2e(stack, urls, plan, progress))
                )
            if "worker" in cfg.suites:
                from bench.pipeline.worker_alone import run_worker_alone

                def worker_alone() -> dict[str, Any]:
                    return asyncio.run(
                        run_worker_alone(
                            stack,
                            urls,
                            cfg.worker_alone_jobs,
                            cfg.e2e_in_flight[0],
                            progress,
                            cfg.timeout_s,
                            warm_up="e2e" not in cfg.suites,  # else the e2e rounds warmed it
                        )
                    )

                results["worker_alone"] = guarded("worker alone", worker_alone)
            if "fairness" in cfg.suites:
                from bench.pipeline.fairness import run_fairness

                results["fairness"] = guarded(
                    "fairness",
                    lambda: asyncio.run(
                        run_fairness(
                            stack, urls, progress, a_jobs=5000 if cfg.mode == "full" else 2000
                        )
                    ),
                )
            if "sinks" in cfg.suites:
                from bench.pipeline.sinks import run_sinks_alone

                results["sinks"] = guarded(
                    "sinks",
                    lambda: asyncio.run(
                        run_sinks_alone(
                            stack,
                            corpus.root,
                            cfg.sink_pg_events,
                            cfg.sink_object_events,
                            progress,
                            profiler,
                            args.out / f"{stamp}-sink",
                        )
                    ),
                )
            if "browser" in cfg.suites:
                browser_plan = BrowserPlan(
                    pages=cfg.browser_pages,
                    concurrency=cfg.browser_sweep,
                    memory_pages=cfg.browser_memory_pages,
                    trials=cfg.browser_trials,
                    timeout_s=max(cfg.timeout_s, 600.0),
                )
                results["browser"] = guarded(
                    "browser",
                    partial(measure_browser, stack, urls, browser_plan, workdir, progress),
                ) or {"status": "not measured: failed (see errors)"}
                results["errors"] += results["browser"].get("errors", [])
    except KeyboardInterrupt:
        results["errors"].append("interrupted")
    except Exception as exc:
        traceback.print_exc()
        results["errors"].append(f"{type(exc).__name__}: {exc}"[:2000])
    finally:
        progress.phase("stopping")
        if stack is not None:
            if results["errors"]:
                _save_logs(stack.logs, args.out / f"{stamp}-logs")
                _save_logs(workdir / "bench.log", args.out / f"{stamp}-logs" / "bench.log")
            stack.close()
        if nginx is not None:
            nginx.stop()
        if args.keep:
            progress.info(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["seconds"] = round(time.monotonic() - t0, 1)
    results["machine"]["after"] = {"loadavg": loadavg()}
    results["goals"] = goals(results)
    written = write(results, args.out)
    progress.phase("done: " + ", ".join(str(p) for p in written))
    sys.stdout.write((args.out / "latest.md").read_text())
    return 1 if results["errors"] else 0


QUIET_PCT = 30.0  # machine busy below this share of one core counts as idle


def _wait_quiet(max_s: float, progress: Progress) -> None:
    progress.phase(f"waiting up to {max_s:g}s for an idle machine")
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        busy = machine_busy_pct(2.0)
        progress.info(f"machine busy {busy:.0f}% of a core, load {loadavg()[0]:.1f}")
        if busy < QUIET_PCT:
            return


def _run_json(module_args: list[str], timeout_s: float = 600) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", *module_args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(module_args[:1])} exited {proc.returncode}: {proc.stderr}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _save_logs(src: Path, dst: Path) -> None:
    with contextlib.suppress(OSError):
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def _corpus_info(sizes: list[int], total: int) -> dict[str, Any]:
    counts = {s: 0 for s, _ in SIZES}
    for n in sizes:
        nearest = min(counts, key=lambda s: abs(s - n))
        counts[nearest] += 1
    mix = ", ".join(f"{c:,} x {s // 1024} KB" for s, c in counts.items())
    return {
        "counts": {f"{s // 1024} KB": c for s, c in counts.items()},
        "pages": len(sizes),
        "total_bytes": total,
        "mean_bytes": round(total / max(len(sizes), 1)),
        "mix": mix,
        "hosts": list(HOSTS),
    }


def _nginx_version() -> str | None:
    try:
        out = subprocess.run(
            [nginx_binary(install=False), "-v"], capture_output=True, text=True, check=False
        )
    except Exception:
        return None
    return out.stderr.strip().rsplit("/", 1)[-1] or None


def _machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in (
        "aiohttp",
        "httpx",
        "scrapy",
        "faust-streaming",
        "aiokafka",
        "fastavro",
        "psycopg",
        "pyinstrument",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "nginx": _nginx_version(),
        "versions": versions,
    }


def scrapy_ratios(
    rounds: list[dict[str, Any]], scrapy: dict[int, float]
) -> list[tuple[int, int, float, float, float]]:
    """(workers, total in flight, rows pages/s, Scrapy pages/s, ratio) for every e2e round at
    the headline concurrency per worker whose total in flight Scrapy was measured at; fewest
    workers first. Scrapy is one process on one core; the tier runs a worker per core."""
    out = []
    for r in rounds:
        workers = r.get("workers", 1)
        total = r["max_in_flight"] * workers
        s = scrapy.get(total)
        v = r.get("row_pages_per_s")
        if r["max_in_flight"] == HEADLINE_CONCURRENCY and v and s:
            out.append((workers, total, v, s, v / s))
    return sorted(out)


def worker_ms_per_page(r: dict[str, Any]) -> float:
    """CPU the tier's workers spent per page in an e2e round (ms of one core)."""
    pct = (r.get("cpu_pct_until_last_result") or {}).get("worker", 0.0)
    rate = r.get("result_pages_per_s") or 0
    return pct * 10 / rate if rate else 0.0


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    e2e = results.get("e2e") or {}
    rounds = e2e.get("throughput", [])
    scrapy = {r["concurrency"]: r["pages_per_s"] for r in results.get("scrapy", [])}
    out: list[dict[str, Any]] = []

    def add(goal: str, target: str, measured: str, met: bool | None) -> None:
        out.append({"goal": goal, "target": target, "measured": measured, "met": met})

    best = max(rounds, key=lambda r: r.get("row_pages_per_s") or 0, default=None)
    if best and best.get("row_pages_per_s"):
        v = best["row_pages_per_s"]
        add(
            "http tier end to end (submit → rows + objects), best setting",
            "≥ 1,000 pages/s",
            f"{v:,.0f} pages/s (max_in_flight={best['max_in_flight']}, "
            f"{best.get('workers', 1)} worker{'s' if best.get('workers', 1) > 1 else ''})",
            v >= 1000,
        )
    else:
        add("http tier end to end", "≥ 1,000 pages/s", "not measured", None)
    vs_scrapy = scrapy_ratios(rounds, scrapy)
    if vs_scrapy:
        # Decided on the round with the most worker processes (one per core is how the tier is
        # deployed); Scrapy at the same total number of fetches in flight.
        w, total, v, s, ratio = vs_scrapy[-1]
        others = "; ".join(
            f"{ow} worker{'s' if ow > 1 else ''} at {ot // ow} vs Scrapy at {ot}: {orat:.2f}x "
            f"({ov:,.0f} vs {os_:,.0f})"
            for ow, ot, ov, os_, orat in vs_scrapy[:-1]
        )
        add(
            "http tier end to end vs Scrapy at equal fetches in flight, same run",
            "≥ 1.5x",
            f"{ratio:.2f}x ({w} worker{'s' if w > 1 else ''} at {total // w} vs Scrapy at "
            f"{total}: {v:,.0f} vs {s:,.0f} pages/s)" + (f"; {others}" if others else ""),
            ratio >= 1.5,
        )
    else:
        add("http tier end to end vs Scrapy", "≥ 1.5x", "not measured", None)
    trials = e2e.get("formats_trials")
    fr = e2e.get("formats_round")
    if trials and fr and all(trials["plain_row_pages_per_s"] + trials["formats_row_pages_per_s"]):
        plain_rate = statistics.median(trials["plain_row_pages_per_s"])
        fmt_rate = statistics.median(trials["formats_row_pages_per_s"])
        ratio = fmt_rate / plain_rate
        extra = statistics.median(
            c.get("worker", 0.0) for c in trials["formats_cpu_ms_per_page"]
        ) - statistics.median(c.get("worker", 0.0) for c in trials["plain_cpu_ms_per_page"])
        add(
            f"http tier with formats {'+'.join(fr['formats'])} vs without, same run and setting",
            "≥ 0.7x",
            f"{ratio:.2f}x, medians of {trials['runs']} rounds each ({fmt_rate:,.0f} vs"
            f" {plain_rate:,.0f} pages/s; the formats cost the workers {extra:+.2f} ms CPU per"
            " page)",
            ratio >= 0.7,
        )
    fair = {r["a_max_jobs"]: r for r in (results.get("fairness") or {}).get("rounds", [])}
    if fair:
        capped = next((r for c, r in fair.items() if c), None)
        free = fair.get(None)
        if capped and free:
            add(
                f"tenant B's 10 jobs while A floods {capped['a_jobs']:,} (A capped at"
                f" {capped['a_max_jobs']} jobs not ended vs uncapped)",
                "B not held behind A's whole flood",
                f"B p50 {capped['b_latency_ms']['p50']:,.0f} ms / max"
                f" {capped['b_latency_ms']['max']:,.0f} ms capped; p50"
                f" {free['b_latency_ms']['p50']:,.0f} ms / max"
                f" {free['b_latency_ms']['max']:,.0f} ms uncapped",
                capped["b_latency_ms"]["max"] < free["b_latency_ms"]["max"],
            )
    lat = (e2e.get("latency") or {}).get("submit_to_result_ms", {})
    if lat.get("n"):
        add(
            "p50 submit → result at low load",
            "≤ 25 ms",
            f"{lat['p50']:.1f} ms",
            lat["p50"] <= 25,
        )
    else:
        add("p50 submit → result at low load", "≤ 25 ms", "not measured", None)
    pg = (results.get("sinks") or {}).get("postgres", {})
    if pg.get("events_per_s"):
        add(
            "sinks into PostgreSQL",
            "≥ 20,000 events/s",
            f"{pg['events_per_s']:,.0f} events/s",
            pg["events_per_s"] >= 20_000,
        )
    else:
        add("sinks into PostgreSQL", "≥ 20,000 events/s", "not measured", None)
    slow = e2e.get("memory_round")
    r200 = slow or next(
        (r for r in rounds if r["max_in_flight"] == 200 and r.get("workers", 1) == 1), None
    )
    if r200 and r200.get("worker_peak_rss_bytes"):
        mb = r200["worker_peak_rss_bytes"] / 1e6
        seen = (r200.get("in_flight_seen") or {}).get("max")
        where = f"; responses sent at {r200['slow_rate_kib']} KiB/s each" if slow else ""
        shown = f"{seen:,.0f}" if isinstance(seen, int | float) else "?"
        add(
            "http worker peak RSS at 200 in-flight fetches",
            "≤ 250 MB",
            f"{mb:,.0f} MB (max in flight seen: {shown}{where})",
            mb <= 250,
        )
    else:
        add("http worker peak RSS at 200 in flight", "≤ 250 MB", "not measured", None)
    _browser_goals(results.get("browser") or {}, add)
    return out


def _browser_headline(head: dict[str, Any]) -> tuple[float, str] | None:
    """The tier / raw new-context ratio at the goal's concurrency, and how it was measured:
    the medians of the interleaved runs when there were several, else the one run."""
    trials = head.get("trials") or {}
    several = bool(trials.get("ratio_tier_to_raw_new"))
    if several:
        ratio = trials["ratio_tier_to_raw_new"]
        tier = trials["median_pages_per_s"]["tier"]
        raw = trials["median_pages_per_s"]["raw_new_context"]
        runs = trials["pages_per_s"]
        detail = (
            f"{ratio:.2f}x, medians of {trials['runs']} interleaved runs ({tier:,.1f} vs "
            f"{raw:,.1f} pages/s; tier {runs_text(runs['tier'])}, "
            f"raw {runs_text(runs['raw_new_context'])}"
        )
    elif head.get("ratio_tier_to_raw_new"):
        ratio = head["ratio_tier_to_raw_new"]
        tier = head["tier"]["pages_per_s"]
        raw = head["raw_new_context"]["pages_per_s"]
        detail = f"{ratio:.2f}x ({tier:,.1f} vs {raw:,.1f} pages/s"
    else:
        return None
    reused = head.get("ratio_tier_to_raw_reused")
    full = (head.get("raw_new_context_full_chromium") or {}).get("pages_per_s")
    if reused:
        run = "first run " if several else ""
        detail += f"; {run}vs reused contexts {reused:.2f}x"
    if full:
        detail += f"; vs the loop on the full Chromium {tier / full:.2f}x"
    return ratio, detail + ")"


def _browser_goals(b: dict[str, Any], add: Callable[[str, str, str, bool | None], None]) -> None:
    c = b.get("headline_concurrency", BROWSER_HEADLINE_CONCURRENCY)
    head = next((r for r in b.get("rounds", []) if r["concurrency"] == c), None)
    goal = f"browser tier end to end vs a raw Playwright loop (new context per page), {c} at once"
    headline = _browser_headline(head) if head else None
    if headline is None:
        add(goal, "≥ 1.0x", "not measured", None)
    else:
        ratio, detail = headline
        add(goal, "≥ 1.0x", detail, ratio >= 1.0)
    mem = b.get("memory_run") or {}
    halves = (mem.get("memory") or {}).get("peak_pss_all_by_half")
    goal = f"browser worker memory over {mem.get('pages', 1000):,} pages (worker + Chromium, PSS)"
    target = "bounded: 2nd-half peak ≤ 1.25x 1st-half"
    if halves and halves[0]:
        add(
            goal,
            target,
            f"{halves[0] / 1e6:,.0f} MB → {halves[1] / 1e6:,.0f} MB "
            f"({mem['memory'].get('browsers_seen', '?')} Chromium launches)",
            halves[1] <= 1.25 * halves[0],
        )
    else:
        add(goal, target, "not measured (full runs only)", None)
