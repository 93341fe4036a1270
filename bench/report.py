"""Results as files: ``<stamp>.json``, ``latest.json``, ``latest.md`` and ``latest.png``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench.measure.profile import render_text

HEADLINE_CONCURRENCY = 64
BROWSER_HEADLINE_CONCURRENCY = 4  # pages rendered at once: the browser goal's concurrency
RAW_LABELS = {
    "aiohttp": "aiohttp raw loop",
    "httpx": "httpx raw loop",
    "fetcher": "Scrapifie HttpFetcher alone (no Kafka)",
}


def runs_text(rates: list[float | None]) -> str:
    """Pages/s of repeated runs, in order ("failed" for a run without a rate)."""
    return " / ".join("failed" if r is None else f"{r:,.1f}" for r in rates)


def _mb(n: int | None) -> str:
    return "—" if not n else f"{n / 1e6:,.0f} MB"


def _num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if not a or not b else f"{a / b:.2f}x"


def _by_conc(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(r["concurrency"]): r for r in rows if r.get("pages_per_s")}


def _lat(s: dict[str, Any] | None) -> str:
    if not s or not s.get("n"):
        return "—"
    return f"{s['p50']:,.0f} / {s['p95']:,.0f} / {s['p99']:,.0f}"


def series(results: dict[str, Any]) -> dict[str, dict[int, float]]:
    """pages/s by concurrency for each system (the chart's lines)."""
    out: dict[str, dict[int, float]] = {}
    for client, rows in results.get("raw", {}).items():
        out[RAW_LABELS.get(client, client)] = {
            c: r["pages_per_s"] for c, r in _by_conc(rows).items()
        }
    out["Scrapy"] = {c: r["pages_per_s"] for c, r in _by_conc(results.get("scrapy", [])).items()}
    e2e = results.get("e2e") or {}
    for key, label in (
        ("result_pages_per_s", "Scrapifie http tier → results"),
        ("row_pages_per_s", "Scrapifie http tier → rows"),
    ):
        out[label] = {
            int(r["max_in_flight"]): r[key]
            for r in e2e.get("throughput", [])
            if r.get(key) and r.get("workers", 1) == 1
        }
    return {k: v for k, v in out.items() if v}


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    c = results["corpus"]
    lines = [
        f"# Scrapifie benchmark, {results['started_at']} ({results['mode']} run, "
        f"{results.get('seconds', 0):.0f} s)",
        "",
        f"Machine: {m['cpus']} CPUs, Python {m['python']}, {m['platform']}. Target: nginx "
        f"{m.get('nginx', '?')} serving {c['pages']:,} pages ({c['mix']}; "
        f"{c['total_bytes'] / 1e6:.1f} MB) on {len(c['hosts'])} hosts "
        f"({c['hosts'][0]}…{c['hosts'][-1]}). Every system fetches the same URL list.",
        "",
    ]
    lines += _busy_warning(results)
    lines += _throughput_table(results)
    lines += _formats_section(results)
    lines += _sweep_table(results)
    lines += _latency_section(results)
    lines += _worker_alone_section(results)
    lines += _sinks_section(results)
    lines += _memory_section(results)
    lines += _goals_section(results)
    lines += _hotpath_section(results)
    lines += _profile_section(results)
    lines += _browser_section(results)
    if results.get("errors"):
        lines += ["## Errors", ""]
        lines += [f"- {e.splitlines()[0][:300]}" for e in results["errors"]] + [""]
    lines += [
        "Notes: raw loops report the median of their timed passes over the list (after a "
        "warm-up); Scrapy runs from `spider_opened` to its last item; Scrapifie rates run from the "
        "first submit to the last result (or row). Ratios compare equal concurrency (in-flight "
        "fetches); for Scrapifie that is the worker's `SCRAPIFIE_WORKER__MAX_IN_FLIGHT` times the "
        "number of workers.",
        "",
    ]
    return "\n".join(lines)


def tier_label(r: dict[str, Any]) -> str:
    """How an e2e round is named in tables: the worker count when it is more than one."""
    workers = r.get("workers", 1)
    if workers > 1:
        return f"Scrapifie http tier, {workers} workers at {r['max_in_flight']} each"
    return "Scrapifie http tier"


def _busy_warning(results: dict[str, Any]) -> list[str]:
    """Other work on the machine skews every figure: say so when it was there."""
    notes = []
    before = results["machine"].get("before", {})
    if before.get("busy_pct", 0) > 30:
        notes.append(
            f"the machine was already {before['busy_pct']:.0f}% busy (of one core) at the start, "
            f"load average {before['loadavg'][0]:.1f}"
        )
    for r in (results.get("e2e") or {}).get("throughput", []):
        others = r.get("cpu_pct_until_last_result", {}).get("others", 0)
        if others > 30:
            notes.append(
                f"other processes used {others:.0f}% of a core during the Scrapifie round at "
                f"max_in_flight={r['max_in_flight']}"
            )
    probes = _host_probes(results.get("e2e") or {})
    if probes and max(probes) > 1.2 * min(probes):
        notes.append(
            f"the host's speed varied: a fixed Python loop took {min(probes):.1f} to "
            f"{max(probes):.1f} ms around the Scrapifie rounds, and every process slowed with"
            " it; compare ratios within one run, not figures across runs"
        )
    b = results.get("browser") or {}
    for r in b.get("rounds", []):
        for key, label in (
            ("raw_new_context", "raw loop (new contexts)"),
            ("raw_reused_context", "raw loop (reused contexts)"),
            ("raw_new_context_full_chromium", "raw loop (new contexts, full Chromium)"),
            ("tier", "browser tier"),
        ):
            others = ((r.get(key) or {}).get("cpu_pct") or {}).get("others", 0)
            if others > 30:
                notes.append(
                    f"other processes used {others:.0f}% of a core during the {label} round at "
                    f"{r['concurrency']} at once"
                )
    others = ((b.get("memory_run") or {}).get("cpu_pct") or {}).get("others", 0)
    if others > 30:
        notes.append(f"other processes used {others:.0f}% of a core during the browser memory run")
    if not notes:
        return []
    return [
        "> **Warning: not a quiet machine.** " + "; ".join(notes) + ". Figures are lower than "
        "this machine can do; rerun on an idle machine (`--wait-quiet 600`).",
        "",
    ]


def _throughput_table(results: dict[str, Any]) -> list[str]:
    scrapy = _by_conc(results.get("scrapy", []))
    aio = _by_conc(results.get("raw", {}).get("aiohttp", []))
    lines = [
        "## Throughput (pages/s) and ratios",
        "",
        "| system | in flight | pages/s | x Scrapy | x raw aiohttp | p50 / p95 / p99 ms | "
        "peak RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def row(name: str, conc: int, pps: float | None, lat: str = "—", rss: int | None = None) -> str:
        s = scrapy.get(conc, {}).get("pages_per_s")
        a = aio.get(conc, {}).get("pages_per_s")
        return (
            f"| {name} | {conc} | {_num(pps)} | {_ratio(pps, s)} | {_ratio(pps, a)} | {lat} | "
            f"{_mb(rss)} |"
        )

    for client, rows in results.get("raw", {}).items():
        for conc, r in sorted(_by_conc(rows).items()):
            label = RAW_LABELS.get(client, client)
            lines.append(row(label, conc, r["pages_per_s"], rss=r["peak_rss_bytes"]))
    for conc, r in sorted(scrapy.items()):
        lines.append(row("Scrapy", conc, r["pages_per_s"], rss=r["peak_rss_bytes"]))
    for r in (results.get("e2e") or {}).get("throughput", []):
        # In flight: all workers' fetches together, so the ratios compare equal concurrency.
        conc = int(r["max_in_flight"]) * r.get("workers", 1)
        rss = r.get("worker_peak_rss_bytes")
        tier = tier_label(r)
        lines.append(
            row(
                f"{tier} → `scrape.results`",
                conc,
                r.get("result_pages_per_s"),
                _lat(r.get("submit_to_result_ms")),
                rss,
            )
        )
        lines.append(
            row(
                f"{tier} → PostgreSQL rows + objects",
                conc,
                r.get("row_pages_per_s"),
                _lat(r.get("submit_to_row_ms")),
            )
        )
    if len(lines) == 4:
        return []  # no http suite in this run
    rounds = (results.get("e2e") or {}).get("throughput", [])
    warm = rounds[0].get("broker_warmup") if rounds else None
    lines += [
        "",
        "Scrapifie latencies are submit → result (or row) for jobs submitted all at once, so they "
        "include queueing; RSS is the worker's (the larger, with two workers). In flight is all "
        "workers' together (two workers at 64 each: 128), and the ratios compare that with Scrapy "
        "and the raw loop at the same number. Low-load latency is below.",
    ]
    if warm and warm.get("passes"):
        lines.append(
            f"Before the first round the corpus went through the pipeline {warm['passes']} "
            f"time(s) ({warm['seconds']:g} s) until the broker's JIT compiler used "
            f"{100 * (warm['jit_share_last_pass'] or 0):.0f}% of a core (a broker in production "
            "is warm; a fresh one spends up to half its CPU compiling)."
        )
    lines.append("")
    return lines


def _host_probes(e2e: dict[str, Any]) -> list[float]:
    """Every host probe (bench.procs.host_probe_ms) taken around the e2e rounds."""
    t = e2e.get("formats_trials") or {}
    pairs = [r.get("host_probe_ms") for r in e2e.get("throughput", [])]
    pairs += t.get("plain_host_probe_ms", []) + t.get("formats_host_probe_ms", [])
    return [p for pair in pairs for p in pair or [] if isinstance(p, (int, float)) and p > 0]


def _formats_section(results: dict[str, Any]) -> list[str]:
    e2e = results.get("e2e") or {}
    t, fr = e2e.get("formats_trials"), e2e.get("formats_round")
    if not t or not fr:
        return []
    workers, mif = fr.get("workers", 1), fr["max_in_flight"]
    lines = [
        f"## Formats: jobs asking for {', '.join(fr['formats'])} vs the page only",
        "",
        f"{workers} worker(s) at {mif}, rounds of each kind alternating which goes first (the"
        " first without formats is the round in the table above). Rows + objects per second,"
        " and CPU per page (ms of one core, until the round's last result) of the workers, the"
        " sink, the broker and the whole machine. Host probe: ms a fixed Python loop took"
        " before / after the round (higher: the host gave this machine less CPU then).",
        "",
        "| round | pages/s | workers | sink | broker | machine | host probe |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in ("plain", "formats"):
        label = "with formats" if kind == "formats" else "page only"
        rates = t[f"{kind}_row_pages_per_s"]
        cpus = t[f"{kind}_cpu_ms_per_page"]
        probes = t.get(f"{kind}_host_probe_ms") or [None] * len(rates)
        for i, (rate, cpu, probe) in enumerate(zip(rates, cpus, probes, strict=True), start=1):
            probed = " / ".join(_num(p, 1) for p in probe) if probe else "—"
            lines.append(
                f"| {label} {i} | {_num(rate)} | {_num(cpu.get('worker'), 2)} |"
                f" {_num(cpu.get('sink'), 2)} | {_num(cpu.get('kafka'), 2)} |"
                f" {_num(cpu.get('machine'), 2)} | {probed} |"
            )
    return [*lines, ""]


def _sweep_table(results: dict[str, Any]) -> list[str]:
    s = series(results)
    concs = sorted({c for v in s.values() for c in v})
    if not concs:
        return []
    lines = [
        "## Throughput vs concurrency (pages/s; chart: `latest.png`)",
        "",
        "| system | " + " | ".join(str(c) for c in concs) + " |",
        "| --- |" + " ---: |" * len(concs),
    ]
    for name, v in s.items():
        lines.append(f"| {name} | " + " | ".join(_num(v.get(c)) for c in concs) + " |")
    return [*lines, ""]


def _latency_section(results: dict[str, Any]) -> list[str]:
    lat = (results.get("e2e") or {}).get("latency")
    if not lat:
        return []
    return [
        "## Latency at low load (one job at a time)",
        "",
        "| interval | p50 / p95 / p99 ms | max ms |",
        "| --- | ---: | ---: |",
        f"| submit → producer ack | {_lat(lat['submit_to_ack_ms'])} | "
        f"{lat['submit_to_ack_ms'].get('max', '—')} |",
        f"| submit → result produced by the worker (record timestamp) | "
        f"{_lat(lat['submit_to_emitted_ms'])} | {lat['submit_to_emitted_ms'].get('max', '—')} |",
        f"| submit → result received on `scrape.results` | {_lat(lat['submit_to_result_ms'])} | "
        f"{lat['submit_to_result_ms'].get('max', '—')} |",
        f"| submit → job row (sink transaction start) | {_lat(lat['submit_to_row_ms'])} | "
        f"{lat['submit_to_row_ms'].get('max', '—')} |",
        "",
        f"{lat['jobs']} jobs, {lat['succeeded']} succeeded.",
        "",
    ]


def _sinks_section(results: dict[str, Any]) -> list[str]:
    s = results.get("sinks")
    if not s:
        return []
    pg, obj = s.get("postgres", {}), s.get("objects", {})
    pg_cpu, obj_cpu = pg.get("cpu_pct", {}), obj.get("cpu_pct", {})
    return [
        "## Sinks alone (from pre-filled topics)",
        "",
        "| sink | events | events/s | detail | CPU % (sink / PostgreSQL) |",
        "| --- | ---: | ---: | --- | ---: |",
        f"| PostgreSQL: results (no content) + metering | {sum(pg.get('expected', {}).values()):,} "
        f"| {_num(pg.get('events_per_s'))} | job rows {_num(pg.get('jobs_rows_per_s'))}/s, "
        f"attempt rows {_num(pg.get('attempts_rows_per_s'))}/s (both at once) | "
        f"{pg_cpu.get('sink', '—')} / {pg_cpu.get('postgres', '—')} |",
        "| object storage (local, synced before rows) + job rows |"
        f" {obj.get('expected', {}).get('jobs', 0):,} "
        "| "
        f"{_num(obj.get('events_per_s'))} | {obj.get('objects', 0):,} objects of "
        f"~{obj.get('mean_object_bytes', 0) / 1000:.0f} KB (gzip) | "
        f"{obj_cpu.get('sink', '—')} / {obj_cpu.get('postgres', '—')} |",
        "",
    ]


def _worker_alone_section(results: dict[str, Any]) -> list[str]:
    w = results.get("worker_alone")
    if not w or "jobs_per_s" not in w:
        return []
    return [
        "## http worker alone (from a pre-filled topic, no sink)",
        "",
        "| jobs | max_in_flight | jobs/s | worker CPU per job | worker CPU | broker CPU per job |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {w['jobs']:,} | {w['max_in_flight']} | {_num(w['jobs_per_s'])} | "
        f"{w['worker_cpu_ms_per_job']:.2f} ms | {w['worker_cpu_pct']:.0f}% of a core | "
        f"{w['kafka_cpu_ms_per_job']:.2f} ms |",
        "",
        "From the 10th to the 90th percentile of results. Worker CPU counts its helper threads "
        "(gzip of big pages), so it can pass 100% of a core.",
        "",
    ]


def _memory_section(results: dict[str, Any]) -> list[str]:
    lines = ["## Memory (peak RSS, VmHWM)", "", "| process | peak RSS |", "| --- | ---: |"]
    e2e = results.get("e2e") or {}
    for r in e2e.get("throughput", []):
        seen = r.get("in_flight_seen", {})
        workers = r.get("workers", 1)
        jobs = (
            f", jobs in progress: max {_num(seen['jobs_max'])}, mean "
            f"{_num(seen.get('jobs_mean_while_busy'))}"
            if seen.get("jobs_max") is not None
            else ""
        )
        lines.append(
            f"| http worker{f' (one of {workers})' if workers > 1 else ''}, "
            f"max_in_flight={r['max_in_flight']} (max seen in flight: "
            f"{_num(seen.get('max'))} fetches{jobs}) | {_mb(r.get('worker_peak_rss_bytes'))} |"
        )
    slow = e2e.get("memory_round")
    if slow:
        seen = slow.get("in_flight_seen", {})
        lines.append(
            f"| http worker, max_in_flight=200, slow responses ({slow.get('slow_rate_kib')} KiB/s"
            f" each; max seen in flight: {_num(seen.get('max'))} fetches) | "
            f"{_mb(slow.get('worker_peak_rss_bytes'))} |"
        )
    if e2e.get("sink_peak_rss_bytes"):
        lines.append(f"| sink (whole e2e suite) | {_mb(e2e['sink_peak_rss_bytes'])} |")
    pg = (results.get("sinks") or {}).get("postgres", {})
    if pg.get("sink_peak_rss_bytes"):
        lines.append(f"| sink (PostgreSQL alone) | {_mb(pg['sink_peak_rss_bytes'])} |")
    obj = (results.get("sinks") or {}).get("objects", {})
    if obj.get("sink_peak_rss_bytes"):
        lines.append(f"| sink (objects alone) | {_mb(obj['sink_peak_rss_bytes'])} |")
    for r in results.get("scrapy", []):
        lines.append(f"| Scrapy, {r['concurrency']} in flight | {_mb(r.get('peak_rss_bytes'))} |")
    b = results.get("browser") or {}
    for r in b.get("rounds", []):
        t = r.get("tier") or {}
        chromium = ((t.get("memory") or {}).get("peak_rss_bytes") or {}).get("chromium_tree")
        lines.append(
            f"| browser worker, {r['concurrency']} at once (its Chromium tree: "
            f"{_mb(chromium)} RSS summed) | {_mb(t.get('worker_peak_rss_bytes'))} |"
        )
    m = b.get("memory_run") or {}
    if m.get("worker_peak_rss_bytes"):
        lines.append(
            f"| browser worker, {m['pages']:,} pages, default pool (memory run) | "
            f"{_mb(m['worker_peak_rss_bytes'])} |"
        )
    if len(lines) == 4:
        return []
    return [*lines, ""]


def _goals_section(results: dict[str, Any]) -> list[str]:
    goals = results.get("goals", [])
    if not goals:
        return []
    lines = ["## Goals", "", "| goal | target | measured | |", "| --- | ---: | ---: | --- |"]
    for g in goals:
        mark = {True: "met", False: "**not met**", None: "not measured"}[g["met"]]
        lines.append(f"| {g['goal']} | {g['target']} | {g['measured']} | {mark} |")
    return [*lines, ""]


def _hotpath_section(results: dict[str, Any]) -> list[str]:
    hot = results.get("hotpath")
    if not hot:
        return []
    counts: dict[str, int] = results["corpus"].get("counts", {})
    total = sum(counts.values()) or 1
    sizes = list(counts)
    lines = [
        "## Worker hot path: CPU-bound steps per page, timed alone (ms)",
        "",
        "| step | " + " | ".join(sizes) + " | corpus mix | pages/s per core |",
        "| --- |" + " ---: |" * (len(sizes) + 2),
    ]
    for step, by_size in hot["ms_per_page"].items():
        cells = [by_size.get(sz) for sz in sizes]
        nums = [c for c in cells if isinstance(c, int | float)]
        if len(nums) == len(sizes):
            mix = sum(float(c) * counts[sz] for c, sz in zip(nums, sizes, strict=True)) / total
            tail = f"{mix:.3f} | {1000 / mix:,.0f}" if mix > 0 else "— | —"
        else:
            tail = "— | —"
        shown = [f"{c:.3f}" if isinstance(c, int | float) else str(c) for c in cells]
        lines.append(f"| {step} | " + " | ".join(shown) + f" | {tail} |")
    return [*lines, ""]


def _profile_section(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    prof = (results.get("e2e") or {}).get("profile")
    if prof and prof.get("summary", {}).get("samples"):
        cpu = prof.get("cpu_pct_until_last_result", {})
        lines += [
            f"## Where the http worker's CPU goes ({prof['profiler']}, "
            f"max_in_flight={prof['max_in_flight']}, {prof.get('jobs', 0):,} jobs, "
            f"{_num(prof.get('result_pages_per_s'))} pages/s while profiled)",
            "",
            f"CPU during the window, % of one core: worker {cpu.get('worker', '?')}, kafka "
            f"{cpu.get('kafka', '?')}, sink {cpu.get('sink', '?')}, postgres "
            f"{cpu.get('postgres', '?')}, nginx {cpu.get('nginx', '?')}, bench "
            f"{cpu.get('bench', '?')}, other processes {cpu.get('others', '?')}. Profile file: "
            f"`{Path(prof['profile_file']).name}`.",
            "",
            "```",
            render_text(prof["summary"]).rstrip(),
            "```",
            "",
        ]
    if prof and prof.get("sink_summary", {}).get("samples"):
        lines += [
            "## Where the sink's CPU goes in the same round (py-spy; results with content, "
            f"objects and rows; `{Path(prof['sink_profile_file']).name}`)",
            "",
            "```",
            render_text(prof["sink_summary"]).rstrip(),
            "```",
            "",
        ]
    sink = ((results.get("sinks") or {}).get("postgres") or {}).get("profile")
    if sink and sink.get("summary", {}).get("samples"):
        lines += [
            f"## Where the sink's CPU goes, PostgreSQL alone ({sink['profiler']}; "
            f"`{Path(sink['profile_file']).name}`)",
            "",
            "```",
            render_text(sink["summary"]).rstrip(),
            "```",
            "",
        ]
    return lines


def chart(results: dict[str, Any], path: Path) -> bool:
    """Throughput vs concurrency, log-log; False if matplotlib is missing or there is no data."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    s = series(results)
    if not s:
        return False
    fig, ax = plt.subplots(figsize=(12, 5.5), dpi=110)
    styles = {"→ rows": "--", "→ results": "-"}
    for name, v in s.items():
        xs = sorted(v)
        style = next((st for k, st in styles.items() if k in name), "-")
        ax.plot(xs, [v[x] for x in xs], style, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    concs = sorted({c for v in s.values() for c in v})
    ax.set_xticks(concs, [str(c) for c in concs])
    ax.set_xlabel("concurrency (fetches in flight)")
    ax.set_ylabel("pages/s (log)")
    ax.set_title(
        f"Throughput vs concurrency, {results['corpus']['pages']:,} local pages "
        f"({results['machine']['cpus']} CPUs, {results['mode']} run)"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write(results: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = results["started_at"].replace(":", "").replace("-", "")
    stamped = out_dir / f"{stamp}.json"
    text = json.dumps(results, indent=2, default=str)
    stamped.write_text(text)
    shutil.copyfile(stamped, out_dir / "latest.json")
    (out_dir / "latest.md").write_text(markdown(results))
    written = [stamped, out_dir / "latest.json", out_dir / "latest.md"]
    if chart(results, out_dir / "latest.png"):
        written.append(out_dir / "latest.png")
    return written


def _mem(r: dict[str, Any], key: str, role: str) -> int | None:
    value: int | None = ((r.get("memory") or {}).get(key) or {}).get(role)
    return value


def _browser_section(results: dict[str, Any]) -> list[str]:
    b = results.get("browser") or {}
    lines = ["## Browser tier vs raw Playwright (same pages, same run)", ""]
    if not b.get("rounds"):
        return [*lines, str(b.get("status", "not measured")), ""]
    lines += [
        f"{b['pages']} pages of the same URL list per system ({b.get('chromium') or 'Chromium'},"
        " the headless shell the tier runs, with the pool's launch flags; the full-Chromium row"
        f" runs {b.get('full_chromium') or 'the full browser'}, the issue's reference). Raw loops:"
        " one Chromium, N tasks; page time = "
        "context (or page) open → `goto` (load) → `content()` → close. Tier: `scrapifie worker "
        "--tier browser` with one Chromium x N jobs at once (contexts kept for 20 jobs of one "
        "tenant, pages closed and cookies cleared between jobs), every URL produced at once to "
        "`scrape.browser`, rate = first submit → last `scrape.results` record; page time = the "
        "result's `duration_ms` (the worker's time for the job).",
        "",
        "| system | at once | pages/s | x raw new-context | x raw reused | page p50 / p95 ms | "
        "submit → result p50 / p95 ms | peak RSS: Python / Chromium tree | peak PSS, whole tree |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in b["rounds"]:
        c = r["concurrency"]
        new = (r.get("raw_new_context") or {}).get("pages_per_s")
        reused = (r.get("raw_reused_context") or {}).get("pages_per_s")
        for label, key in (
            ("raw Playwright, new context per page", "raw_new_context"),
            ("raw Playwright, reused contexts", "raw_reused_context"),
            (
                "raw Playwright, new context per page, full Chromium",
                "raw_new_context_full_chromium",
            ),
            ("Scrapifie browser tier → `scrape.results`", "tier"),
        ):
            if key not in r:
                continue  # the full-Chromium loop runs at the headline concurrency only
            x = r.get(key) or {}
            pps = x.get("pages_per_s")
            page = x.get("page_ms") or {}
            sub = x.get("submit_to_result_ms") or {}
            python = x.get("worker_peak_rss_bytes") or _mem(x, "peak_rss_bytes", "root")
            lines.append(
                f"| {label} | {c} | {_num(pps, 1)} | {_ratio(pps, new)} | {_ratio(pps, reused)} | "
                f"{_num(page.get('p50'))} / {_num(page.get('p95'))} | "
                f"{_num(sub.get('p50')) + ' / ' + _num(sub.get('p95')) if sub else '—'} | "
                f"{_mb(python)} / {_mb(_mem(x, 'peak_rss_bytes', 'chromium_tree'))} | "
                f"{_mb(_mem(x, 'peak_pss_bytes', 'all'))} |"
            )
    for r in b["rounds"]:
        t = r.get("trials")
        if t:
            runs = t["pages_per_s"]
            med = t["median_pages_per_s"]
            lines += [
                "",
                f"**{r['concurrency']} at once, {t['runs']} runs each** (the rows above are run 1; "
                "then the two systems alternate which goes first), pages/s: raw new-context "
                f"{runs_text(runs['raw_new_context'])} (median {_num(med['raw_new_context'], 1)}), "
                f"tier {runs_text(runs['tier'])} (median {_num(med['tier'], 1)}); tier / raw "
                f"new-context, medians: **{_num(t['ratio_tier_to_raw_new'], 2)}x**.",
            ]
    fails = [
        f"{r['concurrency']} at once: {r['tier'].get('failed', 0)} failed "
        f"{r['tier'].get('error_codes') or ''}"
        for r in b["rounds"]
        if (r.get("tier") or {}).get("failed")
    ]
    lines += [
        "",
        "RSS sums count pages Chromium's processes share once per process; PSS splits them (the "
        "tree's real cost: Python, Playwright's node driver and every Chromium process). Raw "
        "loops' memory covers their whole run (launch and warm-up too)."
        + (" Tier failures: " + "; ".join(fails) + "." if fails else ""),
        "",
    ]
    m = b.get("memory_run")
    if m and "memory" in m:
        mem = m["memory"]
        halves = mem.get("peak_pss_all_by_half") or [None, None]
        lines += [
            f"**Memory over {m['pages']:,} pages** (the tier's default pool: 1 browser x 4 "
            f"contexts, a browser replaced every 100 pages; {_num(m.get('pages_per_s'), 1)} "
            f"pages/s, {m.get('succeeded', 0):,} succeeded): worker (Python) peak RSS "
            f"{_mb(m.get('worker_peak_rss_bytes'))}; Chromium tree peak RSS "
            f"{_mb(_mem(m, 'peak_rss_bytes', 'chromium_tree'))}; whole tree peak PSS "
            f"{_mb(_mem(m, 'peak_pss_bytes', 'all'))}, at the end "
            f"{_mb(_mem(m, 'final_pss_bytes', 'all'))}; peak PSS in the first / second half of "
            f"the run {_mb(halves[0])} / {_mb(halves[1])}; {mem.get('browsers_seen', '?')} "
            f"Chromium browser processes seen (launches), at most "
            f"{mem.get('max_browsers_at_once', '?')} at once.",
            "",
        ]
    return lines
