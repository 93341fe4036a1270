"""Browser tier vs raw Playwright loops at equal concurrency, over the same local pages.

Per concurrency C (the headline first), over the same ``pages`` URLs of the nginx target (plain
HTML, no subresources: nothing but the document to load and render):

1. **raw, new context per page**: one Chromium (the tier's binary, Debian's headless shell,
   launched by Playwright with the pool's ``BASE_ARGS``), C tasks sharing one iterator over the
   list; per URL: ``new_context`` → ``new_page`` → ``goto`` (``load``) → ``content()`` → close the
   context. At the headline concurrency the same loop also runs on Debian's full Chromium
   (``/usr/bin/chromium``, the issue's reference figure): the tier is compared with the loop on
   its own binary, and the full browser shows what the headless shell saves.
2. **raw, C reused contexts**: the same, but each task keeps one context for the whole run and
   opens (and closes) one page per URL in it.
3. **the browser tier end to end**: ``python -m scrapifie worker --tier browser`` (one Chromium
   with C contexts: ``SCRAPIFIE_BROWSER__BROWSERS=1``, ``CONTEXTS_PER_BROWSER=C``,
   ``SCRAPIFIE_WORKER__MAX_IN_FLIGHT=C``; browsers still recycled every ``pages_per_browser``
   pages and contexts kept for ``jobs_per_context`` jobs of a tenant, cookies cleared between
   them, as in production: the bench's jobs are all one tenant's). After a warm-up,
   ScrapeRequest records for every URL go at once to ``scrape.browser``; rate = URLs / (first
   submit → last ``scrape.results`` record). Page time is the result's ``duration_ms`` (the
   worker's time for the job: robots check, context, render, close), and submit → result is
   kept too (it includes waiting in Kafka).

At the headline concurrency the raw new-context loop and the tier then run ``trials - 1`` more
times each (full runs: 3 in all), alternating which of the two goes first; the goal compares
the median rates. One run of either differs from the next by up to ~10% on this machine.

Raw loops run in a subprocess of their own (``python -m bench.browser.tier --mode new|reused ...``,
printing one JSON object). Memory is sampled from /proc every 0.5 s for every process tree
(``bench.procs.TreeSampler``): RSS by role (the Python process, Playwright's node driver, the
Chromium processes) and PSS, which splits pages Chromium's processes share.

Full runs add a memory run of the tier at its default pool settings (1 browser x 4 contexts,
100 pages per browser): ``memory_pages`` pages (1,000) through one worker, with peak and final
RSS/PSS, the peak PSS of each half of the run (bounded or growing?) and the Chromium browser
processes seen (launches).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.measure.procs import OthersMeter, TreeSampler, jit_cpu_seconds, peak_rss_bytes
from bench.measure.stats import rate, summary_ms
from schemas.records import JobStatus, ScrapeResult
from streams.browser.config import FULL_CHROMIUM, HEADLESS_SHELL

if TYPE_CHECKING:
    from bench.measure.progress import Progress
    from bench.pipeline.stack import BenchStack

CHROMIUM = HEADLESS_SHELL  # the tier's binary (BrowserConfig's default)
MODES = {"new": "raw Playwright, new context per page", "reused": "raw Playwright, reused contexts"}
WARMUP_TIMEOUT_S = 120.0  # worker start-up, joining the group, Chromium launch, robots.txt


@dataclass(frozen=True)
class BrowserPlan:
    pages: int  # URLs per measurement
    concurrency: list[int]  # the first is the headline (the goal's) concurrency
    memory_pages: int  # 0: no memory run
    timeout_s: float = 600.0
    # Runs of the raw new-context loop and of the tier at the headline concurrency, interleaved;
    # the goal compares their medians. One run each differs by up to ~10% from the next.
    trials: int = 1

    def warmup_pages(self, concurrency: int) -> int:
        return max(2 * concurrency, 10)  # >= 5: every site's robots.txt is fetched in warm-up


def chromium_missing() -> str | None:
    missing = [p for p in (CHROMIUM, FULL_CHROMIUM) if not os.access(p, os.X_OK)]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} missing: `apt-get install -y chromium-headless-shell chromium`"
        " (Debian's Chromium)"
    )


def measure_browser(
    stack: BenchStack, urls: list[str], plan: BrowserPlan, workdir: Path, progress: Progress
) -> dict[str, Any]:
    """The browser-tier comparison (item 4 of the benchmark issue); see the module docstring."""
    missing = chromium_missing()
    if missing:
        raise RuntimeError(missing)
    need = plan.pages + plan.warmup_pages(max(plan.concurrency))
    if len(urls) < need:
        raise RuntimeError(f"the browser suite needs {need} URLs; the corpus has {len(urls)}")
    measured = urls[: plan.pages]
    out: dict[str, Any] = {
        "status": "measured",
        "pages": plan.pages,
        "headline_concurrency": plan.concurrency[0],
        "chromium": _chromium_version(CHROMIUM),
        "full_chromium": _chromium_version(FULL_CHROMIUM),
        "rounds": [],
        "memory_run": None,
        "errors": [],  # a system that failed; the others are still measured
    }

    def attempt(what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return fn()
        except Exception as exc:
            message = f"browser {what}: {type(exc).__name__}: {exc}"[:2000]
            progress.info(message.splitlines()[0])
            out["errors"].append(message)
            return {"error": message}

    urls_file = workdir / "browser-urls.txt"
    urls_file.write_text("\n".join(measured) + "\n")
    for c in plan.concurrency:
        warm = urls[plan.pages : plan.pages + plan.warmup_pages(c)]
        warm_file = workdir / f"browser-warm-{c}.txt"
        warm_file.write_text("\n".join(warm) + "\n")
        row: dict[str, Any] = {"concurrency": c}
        for mode, label in MODES.items():
            progress.phase(f"browser: {label}, {c} at once, {plan.pages} pages")
            raw = attempt(
                f"raw {mode} @{c}",
                partial(_run_raw, mode, c, urls_file, warm_file, plan.timeout_s, _ours(stack)),
            )
            row[f"raw_{mode}_context"] = raw
            progress.info(_line(raw))
        if c == plan.concurrency[0]:
            progress.phase(f"browser: raw new context on the full Chromium, {c} at once")
            full = attempt(
                f"raw new (full Chromium) @{c}",
                partial(
                    _run_raw,
                    "new",
                    c,
                    urls_file,
                    warm_file,
                    plan.timeout_s,
                    _ours(stack),
                    FULL_CHROMIUM,
                ),
            )
            row["raw_new_context_full_chromium"] = full
            progress.info(_line(full))
        progress.phase(f"browser tier end to end, {c} in flight, {plan.pages} pages")
        tier = attempt(
            f"tier @{c}",
            partial(_tier, stack, measured, warm, c, None, plan.timeout_s, progress),
        )
        row["tier"] = tier
        progress.info(_line(tier))
        for mode in MODES:
            base = row[f"raw_{mode}_context"].get("pages_per_s")
            pps = tier.get("pages_per_s")
            row[f"ratio_tier_to_raw_{mode}"] = round(pps / base, 3) if pps and base else None
        progress.info(
            f"tier / raw new-context {row['ratio_tier_to_raw_new']}x, "
            f"tier / raw reused {row['ratio_tier_to_raw_reused']}x"
        )
        if c == plan.concurrency[0] and plan.trials > 1:
            systems = _headline_systems(
                stack, measured, warm, c, urls_file, warm_file, plan, progress
            )
            row["trials"] = _trials(row, plan.trials, systems, attempt, progress)
        out["rounds"].append(row)
    if plan.memory_pages:
        n = plan.memory_pages
        mem_urls = [urls[i % len(urls)] for i in range(n)]
        warm = urls[plan.pages : plan.pages + plan.warmup_pages(4)]
        progress.phase(f"browser tier memory: {n:,} pages, default pool (1 browser x 4 contexts)")
        # A few pages/s on two cores: give the long run time enough (not a limit that binds).
        timeout_s = max(plan.timeout_s, 2.0 * n)
        m = out["memory_run"] = attempt(
            "memory run",
            partial(_tier, stack, mem_urls, warm, None, "memory", timeout_s, progress),
        )
        if "memory" in m:
            progress.info(
                _line(m) + f"; {m['memory'].get('browsers_seen')} Chromium browsers seen, peak "
                f"PSS by half {_mbs(m['memory'].get('peak_pss_all_by_half'))}"
            )
    return out


def _headline_systems(
    stack: BenchStack,
    urls: list[str],
    warm: list[str],
    c: int,
    urls_file: Path,
    warm_file: Path,
    plan: BrowserPlan,
    progress: Progress,
) -> dict[str, Callable[[int], dict[str, Any]]]:
    """Run ``i`` of the raw new-context loop and of the tier (on a topic prefix of its own)."""

    def raw(i: int) -> dict[str, Any]:
        return _run_raw("new", c, urls_file, warm_file, plan.timeout_s, _ours(stack))

    def tier(i: int) -> dict[str, Any]:
        return _tier(stack, urls, warm, c, f"c{c}-run{i}", plan.timeout_s, progress)

    return {"raw_new_context": raw, "tier": tier}


def _trials(
    row: dict[str, Any],
    n: int,
    systems: dict[str, Callable[[int], dict[str, Any]]],
    attempt: Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]],
    progress: Progress,
) -> dict[str, Any]:
    """Runs 2..n of each of ``systems`` (run 1 is already in ``row``), alternating which goes
    first, and the ratio of the tier's median rate to the raw loop's."""
    rates: dict[str, list[float | None]] = {k: [row[k].get("pages_per_s")] for k in systems}
    later: dict[str, list[dict[str, Any]]] = {k: [] for k in systems}  # runs 2..n in full
    c = row["concurrency"]
    for i in range(2, n + 1):
        order = list(systems) if i % 2 else list(reversed(systems))
        for key in order:
            progress.phase(f"browser: {key.replace('_', ' ')}, {c} at once, run {i} of {n}")
            r = attempt(f"{key} @{c} run {i}", partial(systems[key], i))
            rates[key].append(r.get("pages_per_s"))
            later[key].append(r)
            progress.info(_line(r))
    medians = {k: median_rate(v) for k, v in rates.items()}
    tier, raw = medians["tier"], medians["raw_new_context"]
    out = {"runs": n, "pages_per_s": rates, "median_pages_per_s": medians, "later_runs": later}
    out["ratio_tier_to_raw_new"] = round(tier / raw, 3) if tier and raw else None
    progress.info(f"tier / raw new-context, medians of {n} runs: {out['ratio_tier_to_raw_new']}x")
    return out


def median_rate(rates: list[float | None]) -> float | None:
    """Median of the runs that produced a rate; None when none did (a failed run has none)."""
    done = [r for r in rates if r]
    return round(statistics.median(done), 2) if done else None


def _mbs(values: list[int] | None) -> str:
    return "—" if not values else " / ".join(f"{v / 1e6:,.0f} MB" for v in values)


def _line(r: dict[str, Any]) -> str:
    mem = r.get("memory") or {}
    pss = (mem.get("peak_pss_bytes") or {}).get("all")
    return (
        f"{r.get('pages_per_s') or 0:,.1f} pages/s, page p50/p95 "
        f"{(r.get('page_ms') or {}).get('p50', '—')}/{(r.get('page_ms') or {}).get('p95', '—')} "
        f"ms, {r.get('errors', r.get('failed', 0))} errors, peak PSS (tree) "
        f"{(pss or 0) / 1e6:,.0f} MB"
    )


def _chromium_version(binary: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        return out.stdout.strip() or None
    return None


# Raw Playwright loops (run in a subprocess: python -m bench.browser.tier) ---------------------


def _ours(stack: BenchStack) -> list[int]:
    """Roots of the process trees of this run: us (nginx, workers...), Kafka, PostgreSQL."""
    return [p for p in (os.getpid(), stack.kafka_pid, stack.postgres_pid) if p is not None]


def _run_raw(
    mode: str,
    concurrency: int,
    urls_file: Path,
    warm_file: Path,
    timeout_s: float,
    ours: list[int],
    chromium: str = CHROMIUM,
) -> dict[str, Any]:
    """One raw loop in its own interpreter, its process tree's memory sampled from here."""
    cmd = [sys.executable, "-m", "bench.browser.tier", "--mode", mode, "--chromium", chromium]
    cmd += ["--concurrency", str(concurrency), "--urls", str(urls_file), "--warmup", str(warm_file)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    sampler = TreeSampler(proc.pid)
    sampler.start()
    meter = OthersMeter(ours)
    meter.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(
            f"raw Playwright loop ({mode}) did not finish in {timeout_s:g}s"
        ) from None
    finally:
        sampler.stop()
        cpu = meter.stop()
    if proc.returncode != 0:
        raise RuntimeError(
            f"raw Playwright loop ({mode}) exited {proc.returncode}: {stderr[-2000:]}"
        )
    out: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    # The sampler saw the whole life of the process (launch and warm-up too).
    out["memory"] = sampler.summary()
    out["cpu_pct"] = cpu  # the machine, and processes not ours (other work skews the figures)
    out["chromium"] = chromium
    return out


async def _raw_loop(
    mode: str, concurrency: int, urls: list[str], warm: list[str], chromium: str
) -> dict[str, Any]:
    from playwright.async_api import Browser, BrowserContext, async_playwright

    from streams.browser.config import BASE_ARGS

    async with async_playwright() as pw:
        browser: Browser = await pw.chromium.launch(
            executable_path=chromium, headless=True, args=list(BASE_ARGS)
        )
        contexts: list[BrowserContext] = []
        try:
            if mode == "reused":
                contexts = [await browser.new_context() for _ in range(concurrency)]

            async def one(url: str, ctx: BrowserContext | None) -> int:
                if ctx is None:
                    own = await browser.new_context()
                    try:
                        page = await own.new_page()
                        resp = await page.goto(url, wait_until="load")
                        html = await page.content()
                    finally:
                        await own.close()
                else:
                    page = await ctx.new_page()
                    try:
                        resp = await page.goto(url, wait_until="load")
                        html = await page.content()
                    finally:
                        await page.close()
                if resp is None or resp.status != 200:
                    raise RuntimeError(f"{url}: {resp.status if resp else 'no response'}")
                return len(html)

            async def run(todo: list[str]) -> tuple[float, list[float], int, int]:
                it = iter(todo)
                times: list[float] = []
                errors = 0
                chars = 0

                async def task(i: int) -> None:
                    nonlocal errors, chars
                    ctx = contexts[i] if contexts else None
                    for url in it:
                        t0 = time.perf_counter()
                        try:
                            n = await one(url, ctx)
                        except Exception as exc:
                            errors += 1
                            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
                        else:
                            chars += n
                            times.append(time.perf_counter() - t0)

                t0 = time.perf_counter()
                await asyncio.gather(*(task(i) for i in range(concurrency)))
                return time.perf_counter() - t0, times, errors, chars

            await run(warm)
            seconds, times, errors, chars = await run(urls)
        finally:
            for ctx in contexts:
                await ctx.close()
            await browser.close()
    return {
        "mode": mode,
        "concurrency": concurrency,
        "pages": len(urls),
        "ok": len(times),
        "errors": errors,
        "seconds": round(seconds, 3),
        "pages_per_s": rate(len(times), seconds),
        "page_ms": summary_ms(times),
        "html_chars": chars,
        "python_peak_rss_bytes": peak_rss_bytes(os.getpid()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.browser.tier", description=__doc__)
    p.add_argument("--mode", choices=list(MODES), required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--urls", type=Path, required=True)
    p.add_argument("--warmup", type=Path, required=True)
    p.add_argument("--chromium", default=CHROMIUM, help="Chromium binary (default: the tier's)")
    args = p.parse_args(argv)
    urls = args.urls.read_text().split()
    warm = args.warmup.read_text().split()
    out = asyncio.run(_raw_loop(args.mode, args.concurrency, urls, warm, args.chromium))
    print(json.dumps(out))
    return 0


# The browser tier end to end -----------------------------------------------------------------


def _driver_class() -> type[Any]:
    """A Driver (bench.pipeline.driver) that produces to a tier topic and keeps each result's
    fields."""
    from bench.pipeline.driver import Driver

    class TierDriver(Driver):
        tier = "browser"
        max_tier = "browser"  # the comparison is this tier's: no escalation

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.results: dict[str, dict[str, Any]] = {}

        def _on_result(self, job_id: str, message: Any) -> None:
            rec = self.codec.read(message.value or b"", ScrapeResult)
            self.results[job_id] = {
                "status": rec.status,
                "error_code": rec.error_code,
                "attempts": rec.attempts,
                "duration_ms": rec.duration_ms,
            }

    return TierDriver


def _tier(*args: Any) -> dict[str, Any]:
    return asyncio.run(_tier_round(*args))


async def _tier_round(
    stack: BenchStack,
    urls: list[str],
    warm: list[str],
    concurrency: int | None,
    tag: str | None,
    timeout_s: float,
    progress: Progress,
) -> dict[str, Any]:
    """One browser worker on a fresh topic prefix: warm-up, then every URL at once.

    ``concurrency`` None keeps the pool's defaults (the memory run)."""
    name = tag or f"c{concurrency}"
    prefix = await stack.new_prefix(f"browser-{name}")
    settings: dict[str, str] = {"SCRAPIFIE_BROWSER__EXECUTABLE_PATH": CHROMIUM}
    if concurrency is not None:
        settings |= {
            "SCRAPIFIE_WORKER__MAX_IN_FLIGHT": str(concurrency),
            "SCRAPIFIE_BROWSER__BROWSERS": "1",
            "SCRAPIFIE_BROWSER__CONTEXTS_PER_BROWSER": str(concurrency),
        }
    env = stack.env(prefix, **settings)
    worker = stack.spawn(f"worker-browser-{name}", ["worker", "--tier", "browser"], env)
    out: dict[str, Any] = {"concurrency": concurrency, "settings": settings, "prefix": prefix}
    try:
        async with _driver_class()(stack.kafka_config(prefix), stack.dsn, progress) as driver:
            driver.watch = [worker]
            # Workers run only jobs of tenants the deployment knows (unknown_tenant otherwise).
            await stack.add_tenant(f"bench-browser-warm-{name}")
            await stack.add_tenant(f"bench-browser-{name}")
            warm_batch = await driver.submit_many(warm, f"bench-browser-warm-{name}")
            got = await driver.wait_results(warm_batch, WARMUP_TIMEOUT_S)
            if got < len(warm):
                raise RuntimeError(
                    f"browser warm-up incomplete ({got} of {len(warm)} results) after "
                    f"{WARMUP_TIMEOUT_S:g}s; worker log tail:\n{worker.log_tail(20)}"
                )
            sampler = TreeSampler(worker.pid)
            sampler.start()
            meter = OthersMeter(_ours(stack))
            meter.start()
            jit0 = jit_cpu_seconds(stack.kafka_pid) if stack.kafka_pid else 0.0
            try:
                batch = await driver.submit_many(urls, f"bench-browser-{name}")
                await driver.wait_results(batch, timeout_s)
            finally:
                cpu = await asyncio.to_thread(meter.stop)
                memory = await asyncio.to_thread(sampler.stop)
            if stack.kafka_pid:
                # A cold broker compiles as it goes (the full run warms it in the e2e suite).
                out["kafka_jit_cpu_s"] = round(jit_cpu_seconds(stack.kafka_pid) - jit0, 2)
            out.update(_tier_report(driver, batch))
            out["memory"] = memory
            out["cpu_pct"] = cpu
    finally:
        await asyncio.to_thread(stack.stop, worker)
    out["worker_peak_rss_bytes"] = worker.peak_rss_bytes  # the Python process's VmHWM
    return out


def _tier_report(driver: Any, batch: Any) -> dict[str, Any]:
    jobs = list(batch.submitted)
    first = min(batch.submitted.values())
    arrived = [driver.arrived[j] for j in jobs if j in driver.arrived]
    results = [driver.results[j] for j in jobs if j in driver.results]
    statuses = [r["status"] for r in results]
    errors: dict[str, int] = {}
    for r in results:
        if r["status"] != JobStatus.SUCCEEDED:
            errors[r["error_code"] or "?"] = errors.get(r["error_code"] or "?", 0) + 1
    succeeded = statuses.count(JobStatus.SUCCEEDED)
    return {
        "pages": len(jobs),
        "results": len(arrived),
        "succeeded": succeeded,
        "failed": len(results) - succeeded,
        "errors": len(results) - succeeded + len(jobs) - len(arrived),
        "error_codes": errors,
        "retried": sum(1 for r in results if r["attempts"] > 1),
        "complete": len(arrived) == len(jobs),
        "seconds": round(max(arrived) - first, 3) if arrived else None,
        "pages_per_s": rate(succeeded, max(arrived) - first) if arrived else None,
        "page_ms": summary_ms(
            [r["duration_ms"] / 1000 for r in results if r["status"] == JobStatus.SUCCEEDED]
        ),
        "submit_to_result_ms": summary_ms(
            [driver.arrived[j] - batch.submitted[j] for j in jobs if j in driver.arrived]
        ),
    }


if __name__ == "__main__":
    raise SystemExit(main())
