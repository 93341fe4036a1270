"""Extraction rules run in a child process, under a deadline.

A job's rules are checked when it is accepted (they compile), but what a selector costs
depends on the page: one XPath (``//*[count(//*) > 0]``, ``//*[following::*]``) is quadratic in
the page's nodes, and libxml2 cannot be interrupted. Run in the worker's event loop, such a rule
on a big page would stop every other fetch of the worker, miss Kafka's session deadline and be
replayed on the next worker: one tenant's job would stop the tier. So rules are applied in a
child process; one that runs past the deadline is killed with its process (a new one starts
for the next job) and the job gets no ``extract`` document, with a message saying why.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
from collections.abc import Mapping
from concurrent.futures.process import BrokenProcessPool

import documents
from schemas.extract import rules_from_json
from schemas.formats import Format

__all__ = ["ExtractRunner", "ExtractTimeout"]

log = logging.getLogger(__name__)


START_TIMEOUT_S = 60.0


def _ready() -> bool:
    """In the child: nothing; it has imported what the rules need."""
    return True


class ExtractTimeout(Exception):
    """The rules did not finish on this page in time (or their process died)."""


def _extract(
    body: bytes,
    content_type: str | None,
    url: str,
    status: int,
    headers: Mapping[str, str],
    rules_json: str,
) -> bytes:
    """In the child: the ``extract`` document of one page."""
    made = documents.derive(
        body,
        content_type=content_type,
        url=url,
        status=status,
        headers=headers,
        formats=[Format.EXTRACT.value],
        extract=rules_from_json(rules_json),
    )
    return made.get(Format.EXTRACT.value, b"{}")


class ExtractRunner:
    """One child process (started on first use, ``forkserver``: never a fork of the worker's
    threads), shared by the worker's jobs; calls queue for it."""

    def __init__(self, timeout_s: float = 10.0, processes: int = 1) -> None:
        self.timeout_s = timeout_s
        self._processes = processes
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._warm: concurrent.futures.ProcessPoolExecutor | None = None  # started and ready

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self._processes, mp_context=multiprocessing.get_context("forkserver")
            )
        return self._pool

    async def extract(
        self,
        body: bytes,
        *,
        content_type: str | None,
        url: str,
        status: int,
        headers: Mapping[str, str],
        rules_json: str,
    ) -> bytes:
        """The ``extract`` document; raises :class:`ExtractTimeout` past the deadline."""
        loop = asyncio.get_running_loop()
        pool = self._executor()
        if pool is not self._warm:
            # A new process first starts and imports the parser (~1 s): not the rules' time.
            try:
                await asyncio.wait_for(loop.run_in_executor(pool, _ready), START_TIMEOUT_S)
            except (TimeoutError, BrokenProcessPool) as exc:
                self._kill(pool)
                raise ExtractTimeout(f"the extraction process did not start ({exc!r})") from None
            self._warm = pool
        future = loop.run_in_executor(
            pool, _extract, body, content_type, url, status, dict(headers), rules_json
        )
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            self._kill(pool)
            raise ExtractTimeout(
                f"the extraction rules ran past {self.timeout_s:g} s on this page and were"
                " stopped; use simpler selectors"
            ) from None
        except BrokenProcessPool as exc:
            self._kill(pool)
            raise ExtractTimeout(f"the extraction process died ({exc})") from None

    def _kill(self, pool: concurrent.futures.ProcessPoolExecutor) -> None:
        """Stop ``pool``'s process whatever it is doing; the next call starts a new one."""
        if self._pool is pool:
            self._pool = None
        # The executor has no public way to stop a running call before Python 3.14
        # (``kill_workers``); its process table is the only handle on the stuck child.
        processes = getattr(pool, "_processes", None) or {}
        for proc in list(processes.values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        log.warning("extraction process stopped (deadline %.0f s)", self.timeout_s)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
