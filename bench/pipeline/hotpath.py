"""The worker's CPU-bound steps, timed alone on corpus pages of each size (ms per page).

These are what the http worker does per job besides I/O: decide whether the page is a block
page (``streams.tier.blocking.inspect``), gzip the body for the result (ISA-L, level 1, as the
processor does; zlib's level 1 alongside for comparison), hash it, and encode the
ScrapeResult. A step whose import or call fails (the code moved) is reported as missing rather
than failing the run.
"""

from __future__ import annotations

import gzip
import hashlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from isal import igzip

from bench.pipeline.target import SIZES, Corpus


def _time_ms(fn: Callable[[], object], min_s: float = 0.2) -> float:
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s:
            return round(1000 * elapsed / n, 3)


def _steps(body: bytes) -> dict[str, Callable[[], object]]:
    steps: dict[str, Callable[[], object]] = {
        "gzip level 1, zlib": lambda: gzip.compress(body, compresslevel=1, mtime=0),
        "gzip level 1, ISA-L (as the worker)": lambda: igzip.compress(
            body, compresslevel=1, mtime=0
        ),
        "sha256": lambda: hashlib.sha256(body).hexdigest(),
    }
    try:
        from streams.tier.blocking import inspect

        steps["block detection (streams.tier.blocking.inspect)"] = lambda: inspect(
            tier="http",
            status=200,
            url="http://127.0.0.2/p/1.html",
            final_url="http://127.0.0.2/p/1.html",
            body=body,
            content_type="text/html",
        )
    except ImportError:
        pass
    from schemas import Codec
    from schemas.records import JobStatus, ScrapeResult

    codec = Codec()
    now = datetime.now(UTC)
    record = ScrapeResult(
        event_id=str(uuid.uuid4()),
        job_id=str(uuid.uuid4()),
        tenant="bench",
        url="http://127.0.0.2/p/1.html",
        final_url="http://127.0.0.2/p/1.html",
        tier="http",
        attempts=1,
        status=JobStatus.SUCCEEDED,
        http_status=200,
        content_type="text/html",
        content=gzip.compress(body, compresslevel=1, mtime=0),
        content_bytes=len(body),
        content_sha256=hashlib.sha256(body).hexdigest(),
        response_headers={"content-type": "text/html", "server": "nginx"},
        created_at=now,
        finished_at=now,
        trace_id="t",
    )
    steps["Avro encode ScrapeResult"] = lambda: codec.write(record)
    return steps


def measure_hotpath(corpus: Corpus) -> dict[str, Any]:
    """ms per page of each step, for one page of each size class."""
    sizes = [s for s, _ in SIZES]
    picked: dict[int, bytes] = {}
    for path, n in zip(corpus.paths, corpus.sizes, strict=True):
        nearest = min(sizes, key=lambda s: abs(s - n))
        if nearest not in picked:
            picked[nearest] = (corpus.root / path.lstrip("/")).read_bytes()
    out: dict[str, dict[str, float | str]] = {}
    for size, body in sorted(picked.items()):
        for name, fn in _steps(body).items():
            try:
                out.setdefault(name, {})[f"{size // 1024} KB"] = _time_ms(fn)
            except Exception as exc:
                out.setdefault(name, {})[f"{size // 1024} KB"] = f"error: {exc!r}"[:200]
    mean = corpus.total_bytes / max(len(corpus.sizes), 1)
    return {"ms_per_page": out, "mean_page_bytes": round(mean)}
