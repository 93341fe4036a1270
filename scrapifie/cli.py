"""The ``scrapifie`` command: run the stack or one of its processes, submit and inspect jobs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import REGISTRY, start_http_server

from scrapifie import logs, tenants, usage
from scrapifie.settings import Settings
from streams.browser.config import BrowserConfig

log = logging.getLogger("scrapifie")


def main(argv: Sequence[str] | None = None) -> int:
    import httpx

    parser = _parser()
    args = parser.parse_args(argv)
    settings = Settings()
    logs.setup(settings.log_level, settings.log_format, args.command)
    try:
        result: int = args.func(settings, args)
    except httpx.ConnectError as exc:
        print(
            f"cannot reach the gateway at {settings.gateway_url} ({exc}); is `scrapifie up` "
            "running? (SCRAPIFIE_GATEWAY_URL points elsewhere)",
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:
        return _reader_went_away()
    return result


def _reader_went_away() -> int:
    """The reader of our output closed it (``scrapifie jobs show ... | head``): stop quietly.
    Python would print a traceback for the output still buffered when it exits; it goes to
    /dev/null instead. 141 is what a program killed by SIGPIPE exits with."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 141


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scrapifie", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("up", help="run the whole local stack in the foreground (Ctrl-C stops it)")
    s.add_argument("--workers", type=int, default=1, help="http tier worker processes")
    s.set_defaults(func=_up)

    s = sub.add_parser("worker", help="run a tier worker (Faust)")
    s.add_argument("--tier", default="http", choices=["http", "browser", "stealth"])
    s.set_defaults(func=_worker)

    s = sub.add_parser("router", help="run the learned router for tier=auto jobs (Faust)")
    s.set_defaults(func=_router)

    s = sub.add_parser("sink", help="run the PostgreSQL + object-storage sinks")
    s.set_defaults(func=_sink)

    s = sub.add_parser("gateway", help="run the HTTP ingest gateway")
    s.set_defaults(func=_gateway)

    s = sub.add_parser("topics", help="list topics (and create missing ones with --create)")
    s.add_argument("--create", action="store_true")
    s.set_defaults(func=_topics)

    s = sub.add_parser("migrate", help="apply database migrations")
    s.set_defaults(func=_migrate)

    tenants.add_parser(sub).set_defaults(func=_tenants)
    usage.add_parser(sub).set_defaults(func=_usage)

    s = sub.add_parser(
        "verify", help="check the consistency promises against a live deployment (exit 1 if broken)"
    )
    s.add_argument("--since", default="24 hours", help="PostgreSQL interval of jobs to check")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.set_defaults(func=_verify)

    s = sub.add_parser("submit", help="submit a file of URLs or JSON jobs (progress bar)")
    s.add_argument("file", type=Path)
    s.add_argument("--wait", type=float, default=0, help="then wait up to S seconds for results")
    s.set_defaults(func=_submit)

    s = sub.add_parser("results", help="print results from scrape.results as JSON lines")
    s.add_argument("--follow", action="store_true", help="keep printing new results (Ctrl-C stops)")
    s.add_argument("--from-beginning", action="store_true")
    s.set_defaults(func=_results)

    s = sub.add_parser("jobs", help="inspect jobs through the gateway")
    jobs = s.add_subparsers(dest="jobs_command", required=True)
    j = jobs.add_parser("show", help="a job and its story: every attempt and escalation, in order")
    j.add_argument("job_id")
    j.add_argument("--json", action="store_true", help="print the API's JSON instead")
    j.set_defaults(func=_jobs_show)

    s = sub.add_parser("scrape", help="submit one URL through the gateway and print the result")
    s.add_argument("url")
    s.add_argument("--tier", default=None)
    s.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the result")
    s.add_argument("--meta", action="store_true", help="print the job metadata only, as JSON")
    s.set_defaults(func=_scrape)
    return p


# -- processes --------------------------------------------------------------------------------
def _metrics(settings: Settings, port: int) -> None:
    if port:
        start_http_server(port, addr=settings.metrics_host, registry=REGISTRY)


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from faust import Worker

    from connectors.cache import PgFetchCache
    from connectors.storage import open_store
    from connectors.tenant_directory import PgTenantDirectory
    from streams.runtime.app import build_app

    _metrics(settings, settings.worker_metrics_port)
    datadir = settings.data_dir / "faust"
    # The result cache: jobs with options.max_age_s may be answered from an earlier fetch.
    cache = PgFetchCache(settings.dsn(), open_store(settings.storage, settings.data_dir))
    app = build_app(
        args.tier,
        settings.kafka,
        settings.fetch,
        settings.worker,
        REGISTRY,
        str(datadir),
        settings.egress,
        _browser_config(settings, args.tier),
        settings.limits,
        cache,
        settings.prices,
        PgTenantDirectory(settings.dsn()),
    )
    worker = Worker(app, loglevel=settings.log_level.lower(), override_logging=False, quiet=True)
    worker.execute_from_commandline()  # returns via SystemExit on SIGTERM / SIGINT
    return 0


def _browser_config(settings: Settings, tier: str) -> BrowserConfig | None:
    if tier == "browser":
        return settings.browser
    if tier == "stealth":
        profiles = settings.stealth.profiles_dir or settings.data_dir.resolve() / "profiles"
        return settings.stealth.model_copy(update={"profiles_dir": profiles})
    return None


def _router(settings: Settings, _args: argparse.Namespace) -> int:
    from faust import Worker

    from streams.routing.router import build_router

    _metrics(settings, settings.router_metrics_port)
    app = build_router(settings.kafka, settings.worker, REGISTRY, str(settings.data_dir / "faust"))
    worker = Worker(app, loglevel=settings.log_level.lower(), override_logging=False, quiet=True)
    worker.execute_from_commandline()
    return 0


def _run_until_signal(main_coro_factory: object) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main_coro_factory(stop)  # type: ignore[operator]

    asyncio.run(runner())


def _sink(settings: Settings, _args: argparse.Namespace) -> int:
    from connectors.db import migrate
    from connectors.sinks import run_sinks

    _metrics(settings, settings.sink_metrics_port)

    async def main(stop: asyncio.Event) -> None:
        await _retry(lambda: migrate(settings.dsn()), "migrate", stop)
        await run_sinks(
            settings.kafka,
            settings.sink,
            settings.storage,
            settings.dsn(),
            settings.data_dir,
            REGISTRY,
            stop,
        )

    _run_until_signal(main)
    return 0


def _gateway(settings: Settings, _args: argparse.Namespace) -> int:
    from aiohttp import web

    from connectors.gateway import Gateway
    from connectors.storage import open_store

    store = open_store(settings.storage, settings.data_dir)
    gateway = Gateway(
        settings.gateway,
        settings.kafka,
        settings.dsn(),
        store,
        REGISTRY,
        settings.limits,
        settings.prices,
    )
    log.info("gateway listening on http://%s:%d", settings.gateway.host, settings.gateway.port)
    web.run_app(
        gateway.app(),
        host=settings.gateway.host,
        port=settings.gateway.port,
        print=None,
        access_log=None,
    )
    return 0


async def _retry(fn: object, what: str, stop: asyncio.Event) -> None:
    import psycopg

    from schemas.backoff import Backoff

    backoff = Backoff(0.2, 5.0)
    while not stop.is_set():
        try:
            await fn()  # type: ignore[operator]
            return
        except (psycopg.OperationalError, OSError) as exc:
            log.warning("cannot %s yet (%s); retrying in %.1fs", what, exc, backoff.delay_s)
            await backoff.sleep()


# -- administration ---------------------------------------------------------------------------
def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from scrapifie.admin import ensure_topics, list_topics

    async def run() -> None:
        if args.create:
            created = await ensure_topics(settings.kafka)
            print(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))
        for name, partitions in (await list_topics(settings.kafka)).items():
            print(f"{name:32} {partitions if partitions else 'missing'}")

    asyncio.run(run())
    return 0


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from connectors.db import migrate

    applied = asyncio.run(migrate(settings.dsn()))
    print(f"applied {len(applied)} migrations" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def _tenants(settings: Settings, args: argparse.Namespace) -> int:
    return tenants.run(settings.dsn(), args)


def _usage(settings: Settings, args: argparse.Namespace) -> int:
    return usage.run(settings.dsn(), args)


# -- client -----------------------------------------------------------------------------------
def api_key(settings: Settings) -> str:
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    path = settings.data_dir / "api_key"
    if path.exists():
        return path.read_text().strip()
    raise SystemExit(
        "no API key: set SCRAPIFIE_API_KEY or run `scrapifie up` (writes .data/api_key)"
    )


def _scrape(settings: Settings, args: argparse.Namespace) -> int:
    import httpx

    headers = {"Authorization": f"Bearer {api_key(settings)}"}
    body: dict[str, object] = {"url": args.url}
    if args.tier:
        body["tier"] = args.tier
    with httpx.Client(
        base_url=settings.gateway_url, headers=headers, timeout=args.wait + 10, trust_env=False
    ) as client:
        resp = client.post("/v1/jobs", params={"wait": args.wait}, json=body)
        if resp.status_code >= 400:
            print(resp.text, file=sys.stderr)
            return 2
        job = resp.json()
        if resp.status_code == 202:
            print(
                f"job {job['job_id']} still {job['status']} after {args.wait:g}s", file=sys.stderr
            )
            return 3
        if args.meta or job["status"] != "succeeded":
            print(json.dumps(job, indent=2))
            return 0 if job["status"] == "succeeded" else 1
        print(
            f"# {job['http_status']} {job['final_url']} ({job['content_bytes']} bytes, "
            f"tier {job['tier']}, job {job['job_id']})",
            file=sys.stderr,
        )
        content = client.get(f"/v1/jobs/{job['job_id']}/content")
        sys.stdout.write(content.text)
    return 0


def _jobs_show(settings: Settings, args: argparse.Namespace) -> int:
    import httpx

    from scrapifie.story import render_job

    headers = {"Authorization": f"Bearer {api_key(settings)}"}
    with httpx.Client(
        base_url=settings.gateway_url, headers=headers, timeout=30, trust_env=False
    ) as client:
        resp = client.get(f"/v1/jobs/{args.job_id}")
    if resp.status_code != 200:
        print(resp.text, file=sys.stderr)
        return 2
    print(json.dumps(resp.json(), indent=2) if args.json else render_job(resp.json()))
    return 0


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    from scrapifie.verify import run_verify

    return run_verify(settings, args)


def _submit(settings: Settings, args: argparse.Namespace) -> int:
    from scrapifie.client import submit

    return submit(settings.gateway_url, api_key(settings), args.file, args.wait)


def _results(settings: Settings, args: argparse.Namespace) -> int:
    from scrapifie.client import follow_results

    if not args.follow and not args.from_beginning:
        raise SystemExit("use --follow (new results) and/or --from-beginning")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow_results(settings.kafka, args.from_beginning, args.follow))
    return 0


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from scrapifie.stack import run_stack

    return run_stack(settings, Path(__file__).resolve().parent.parent, args.workers)
