"""robots.txt, fetched once per origin and cached with a TTL (RFC 9309 semantics).

- 2xx: parsed with protego and obeyed for our product token; ``Crawl-delay`` is reported.
- 4xx (incl. 404): no restrictions.
- 5xx, timeouts, connection errors: the site is unreachable, so everything is disallowed for a
  short TTL (RFC 9309 §2.3.1.4); jobs fail ``robots_disallowed`` with that reason.
- Lookups are single-flight per origin: a burst of jobs for one site fetches robots.txt once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from protego import Protego

from streams.errors import FetchError, TransientError
from streams.fetchers.base import Fetcher, FetchRequest

log = logging.getLogger(__name__)

MAX_ROBOTS_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class RobotsVerdict:
    allowed: bool
    reason: str | None = None
    crawl_delay_s: float | None = None


@dataclass(slots=True)
class _Entry:
    parser: Protego | None  # None: no rules
    disallow_all: str | None  # reason, when the site's robots.txt was unreachable
    expires: float


class RobotsCache:
    def __init__(
        self,
        fetcher: Fetcher,
        agent: str,
        *,
        ttl_s: float = 3600.0,
        error_ttl_s: float = 60.0,
        max_origins: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetcher = fetcher
        self._agent = agent
        self._ttl_s = ttl_s
        self._error_ttl_s = error_ttl_s
        self._max = max_origins
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[_Entry]] = {}
        self.fetches = 0

    async def check(self, url: str) -> RobotsVerdict:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        entry = await self._entry(origin)
        if entry.disallow_all is not None:
            return RobotsVerdict(False, entry.disallow_all)
        if entry.parser is None:
            return RobotsVerdict(True)
        delay = entry.parser.crawl_delay(self._agent)
        if not entry.parser.can_fetch(url, self._agent):
            return RobotsVerdict(False, f"disallowed by {origin}/robots.txt", delay)
        return RobotsVerdict(True, None, float(delay) if delay is not None else None)

    async def _entry(self, origin: str) -> _Entry:
        entry = self._entries.get(origin)
        if entry is not None and entry.expires > self._clock():
            self._entries.move_to_end(origin)
            return entry
        pending = self._inflight.get(origin)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._inflight[origin] = future
        try:
            entry = await self._load(origin)
            future.set_result(entry)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._inflight[origin]
        self._entries[origin] = entry
        self._entries.move_to_end(origin)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return entry

    async def _load(self, origin: str) -> _Entry:
        self.fetches += 1
        now = self._clock()
        try:
            resp = await self._fetcher.fetch(
                FetchRequest(
                    url=f"{origin}/robots.txt", timeout_s=10, max_body_bytes=MAX_ROBOTS_BYTES
                )
            )
        except TransientError as exc:
            reason = f"robots.txt unreachable ({exc.code}); treated as disallow-all"
            return _Entry(None, reason, now + self._error_ttl_s)
        except FetchError as exc:
            # Fatal for robots.txt itself (too large, invalid response, DNS/SSRF refusal): the page
            # fetch will report its own error; robots.txt imposes nothing.
            log.info("robots.txt of %s not usable (%s): no restrictions", origin, exc.code)
            return _Entry(None, None, now + self._ttl_s)
        if 200 <= resp.status < 300:
            text = resp.body.decode("utf-8", errors="replace")
            return _Entry(Protego.parse(text), None, now + self._ttl_s)
        if 400 <= resp.status < 500:
            return _Entry(None, None, now + self._ttl_s)
        reason = f"robots.txt answered HTTP {resp.status}; treated as disallow-all"
        return _Entry(None, reason, now + self._error_ttl_s)
