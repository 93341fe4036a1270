"""Client-side commands: submit a batch with a progress bar, follow the results topic."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, TextIO

import httpx
from aiokafka import AIOKafkaConsumer

from schemas import Codec
from schemas.kafka import KafkaConfig
from schemas.records import FINAL_STATUSES, JobStatus, ScrapeResult

BATCH = 500
_BULKY = frozenset({"content", "screenshot"})


class Progress:
    """A one-line progress bar on a terminal (plain lines when not a terminal)."""

    def __init__(self, total: int, label: str, out: TextIO = sys.stderr) -> None:
        self.total, self.label, self.out = total, label, out
        self.tty = out.isatty()
        self._last = 0.0

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.1 if self.tty else 2.0):
            return
        self._last = now
        width = 30
        filled = int(width * done / max(1, self.total))
        line = f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {extra}"
        self.out.write(("\r" + line) if self.tty else line + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")


def read_jobs(path: Path) -> list[dict[str, Any]]:
    """One job per line: a URL, or a JSON object like the API's (``{"url": ..., ...}``)."""
    jobs = []
    for n, raw in enumerate(path.read_text("utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                jobs.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{n}: invalid JSON: {exc}") from exc
        else:
            jobs.append({"url": line})
    return jobs


def submit(gateway: str, api_key: str, path: Path, wait_s: float, out: TextIO = sys.stdout) -> int:
    jobs = read_jobs(path)
    headers = {"Authorization": f"Bearer {api_key}"}
    accepted: list[tuple[str, str]] = []
    with httpx.Client(base_url=gateway, headers=headers, timeout=60, trust_env=False) as client:
        bar = Progress(len(jobs), "submitted")
        for i in range(0, len(jobs), BATCH):
            chunk = jobs[i : i + BATCH]
            resp = client.post("/v1/jobs/batch", json={"jobs": chunk})
            while resp.status_code == 429:  # the account's rate or jobs in flight: wait, resend
                time.sleep(float(resp.headers.get("Retry-After", "5")))
                resp = client.post("/v1/jobs/batch", json={"jobs": chunk})
            if resp.status_code != 202:
                bar.close()
                print(f"batch starting at job {i + 1} refused: {resp.text}", file=sys.stderr)
                return 2
            for job, src in zip(resp.json()["jobs"], chunk, strict=True):
                accepted.append((job["job_id"], src["url"]))
                out.write(f"{job['job_id']}\t{src['url']}\n")
            bar.update(len(accepted))
        bar.update(len(accepted), force=True)
        bar.close()
        if wait_s <= 0:
            return 0
        return _wait(client, accepted, wait_s)


def _wait(client: httpx.Client, accepted: list[tuple[str, str]], wait_s: float) -> int:
    pending = {job_id for job_id, _ in accepted}
    counts = dict.fromkeys(FINAL_STATUSES, 0)
    bar = Progress(len(accepted), "finished ")
    deadline = time.monotonic() + wait_s
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            resp = client.get(f"/v1/jobs/{job_id}")
            if resp.status_code == 200 and resp.json()["status"] in counts:
                counts[JobStatus(resp.json()["status"])] += 1
                pending.discard(job_id)
            bar.update(len(accepted) - len(pending), _tally(counts))
        if pending:
            time.sleep(1)
    bar.update(len(accepted) - len(pending), _tally(counts), True)
    bar.close()
    if pending:
        print(f"{len(pending)} jobs still running after {wait_s:g}s", file=sys.stderr)
        return 3
    return 0 if counts[JobStatus.FAILED] == 0 else 1


def _tally(counts: dict[JobStatus, int]) -> str:
    return f"ok {counts[JobStatus.SUCCEEDED]} failed {counts[JobStatus.FAILED]}"


async def follow_results(
    kafka: KafkaConfig, from_beginning: bool, follow: bool, out: TextIO = sys.stdout
) -> None:
    """Print one JSON line per result on scrape.results (metadata; content omitted). Without
    ``follow``, stop once the topic has been quiet for two seconds."""
    codec = Codec()
    consumer = AIOKafkaConsumer(
        kafka.topics.results,
        bootstrap_servers=kafka.bootstrap,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        max_partition_fetch_bytes=kafka.max_message_bytes + 65536,
    )
    await consumer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=2000)
            if not batches and not follow:
                return
            for msgs in batches.values():
                for msg in msgs:
                    r = codec.read(msg.value or b"", ScrapeResult)
                    out.write(json.dumps(_metadata(r), default=str) + "\n")
            out.flush()
    except asyncio.CancelledError:
        pass
    finally:
        await consumer.stop()


def _metadata(result: ScrapeResult) -> dict[str, Any]:
    """``result``'s fields in schema order, without the (large) content and screenshot."""
    return {f.name: getattr(result, f.name) for f in fields(result) if f.name not in _BULKY}
