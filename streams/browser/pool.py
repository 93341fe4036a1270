"""A pool of Chromium processes (Playwright) handing out browser contexts to jobs.

Invariants:
- :meth:`BrowserPool.context` gives a job a context of its own, closed when the job ends,
  whatever happened;
- :meth:`BrowserPool.keyed_context` gives a job a context that earlier jobs of the same key (the
  browser tiers use tenant + egress proxy) may have used; a context never serves two keys.
  Between two jobs its pages are closed and its cookies cleared; after ``jobs_per_context`` jobs,
  a job that raised, or a failed clean-up it is closed. Idle kept contexts are at most
  ``browsers * contexts_per_browser``, the least recently used closed first;
- ephemeral contexts send ``Cache-Control: no-cache`` with every request, so a kept context's
  HTTP cache never answers for the network (Chromium then fetches every time, measured);
- at most ``contexts_per_browser`` jobs are in contexts per browser and at most
  ``browsers * contexts_per_browser`` in all; callers beyond that wait for a free slot;
- a browser that has served ``pages_per_browser`` jobs takes no more work; it is closed
  once its last job ends and a fresh one is launched on demand (Chromium leaks memory over time);
- a browser that disconnects (crash, SIGKILL, OOM killer) is dropped at once: its jobs fail with
  :class:`BrowserCrashed` (transient: retry the same tier) and the next job launches a new one;
- persistent profiles (stealth tier): one Chromium user-data-dir per (tenant, session_id), named by
  a hash of both, so tenants never share one; one job at a time per profile (per-process lock);
- a job may bring Playwright proxy settings (the browser tiers always do: the guard proxy of
  ``streams/browser/guard_proxy.py``, on the port of the job's own lease). Its context then
  reaches the network only through that proxy, and a browser launched for such a job gets a
  proxy at browser level too (``launch_proxy``: the guard proxy's shared port, which refuses
  everything that is not a job's context) plus :data:`PROXIED_ARGS`, so Chromium resolves no
  name itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from playwright.async_api import Browser, BrowserContext, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError

from streams.browser._slots import JobLease, Kept, Slot, choose_slot, crash_errors
from streams.browser.config import (
    BrowserConfig,
    ProxySettings,
    browser_proxy,
    context_options,
    launch_args,
)
from streams.browser.errors import BrowserUnavailable
from streams.browser.profiles import (
    ProfileLocks,
    profile_dir_name,
    restore_session_cookies,
    save_session_cookies,
)

log = logging.getLogger(__name__)

__all__ = ["BrowserPool", "Opener", "PoolStats"]


@dataclass(slots=True)
class PoolStats:
    """Counters since the pool started (for metrics and tests)."""

    launches: int = 0
    persistent_launches: int = 0
    retired: int = 0
    crashed: int = 0
    contexts: int = 0  # contexts opened
    reused: int = 0  # jobs served by a context an earlier job of the same key used


#: What :meth:`BrowserPool.keyed_context` calls to open a new context's resources: it enters
#: them into the stack (closed after the context) and returns the context's proxy settings and
#: the attachment the context's jobs get.
Opener = Callable[[contextlib.AsyncExitStack], Awaitable[tuple[ProxySettings | None, Any]]]


class BrowserPool:
    """Owns Chromium processes; ``async with pool.context() as ctx`` for one job.

    ``user_agent`` is sent by every context (the identifying User-Agent from FetchConfig).
    """

    def __init__(self, config: BrowserConfig, *, user_agent: str) -> None:
        self._config = config
        self._user_agent = user_agent
        self._pw: Playwright | None = None
        self._live: list[Slot] = []  # accepting work (not retiring, not dead)
        self._all: set[Slot] = set()  # every browser not yet closed
        self._launching = 0
        self._active = 0  # contexts open in all ephemeral browsers
        self._waiters: list[asyncio.Future[None]] = []
        self._idle: list[Kept] = []  # kept contexts between jobs, least recently used first
        self._bg: set[asyncio.Task[None]] = set()
        self._closed = False
        self._persistent_sem = asyncio.Semaphore(config.persistent_contexts)
        self._profile_locks = ProfileLocks()
        self._persistent_open: set[BrowserContext] = set()
        self._tmp_profiles: Path | None = None
        self.stats = PoolStats()

    @property
    def config(self) -> BrowserConfig:
        return self._config

    # lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._pw is not None or self._closed:
            raise RuntimeError("a BrowserPool is started once")
        self._pw = await async_playwright().start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every browser (jobs still running fail with BrowserCrashed) and the driver."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        for kept in self._idle:
            self._spawn(self._discard(kept))
        self._idle.clear()
        for slot in list(self._all):
            self._close_later(slot)
        for ctx in list(self._persistent_open):
            self._spawn(self._close_quietly(ctx.close(), "persistent context"))
        while self._bg:
            tasks = list(self._bg)
            self._bg.difference_update(tasks)
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._pw is not None:
            await self._pw.stop()
            self._pw = None
        if self._tmp_profiles is not None:
            await asyncio.to_thread(shutil.rmtree, self._tmp_profiles, True)

    # ephemeral contexts ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def context(
        self, proxy: ProxySettings | None = None, launch_proxy: str | None = None
    ) -> AsyncIterator[BrowserContext]:
        """A fresh context in a pooled browser, closed on exit; ``proxy``: the context's own
        Playwright proxy settings (server, bypass); ``launch_proxy``: the proxy server a
        browser launched for this job gets at browser level (default: the context's server).

        Raises :class:`BrowserCrashed` (instead of Playwright's error) when the browser died
        during the job, and :class:`BrowserUnavailable` when Chromium cannot be started.
        A browser is launched with the browser-level settings of the job that starts it, so
        use a pool either with proxies for every job or for none.
        """
        lease = JobLease()
        slot, _ = await self._acquire(_browser_level(proxy, launch_proxy))
        slot.leases.add(lease)
        try:
            with crash_errors(lease):
                options = context_options(self._config, self._user_agent, no_cache=True)
                if proxy is not None:
                    options["proxy"] = proxy
                ctx = await slot.browser.new_context(**options)
                self.stats.contexts += 1
                try:
                    yield ctx
                finally:
                    lease.active = False
                    if not lease.gone and not await self._close_context(ctx):
                        # A context that will not close means a wedged browser: stop using it.
                        self._retire(slot)
        finally:
            lease.active = False
            slot.leases.discard(lease)
            self._release(slot)

    @contextlib.asynccontextmanager
    async def keyed_context(
        self, key: Hashable, opener: Opener, launch_proxy: str | None = None
    ) -> AsyncIterator[tuple[BrowserContext, Any]]:
        """A context for one job, kept for the next job of the same ``key`` (see the module's
        invariants), and its attachment. A new context's proxy settings and attachment come
        from ``opener``; ``launch_proxy``: the proxy server a browser launched now gets at
        browser level, as for :meth:`context`.

        Errors as for :meth:`context`. A job that raises leaves its context closed, not kept.
        """
        lease = JobLease()
        launch: ProxySettings | None = {"server": launch_proxy} if launch_proxy else None
        slot, kept = await self._acquire(launch, key)
        slot.leases.add(lease)
        keep = False
        try:
            with crash_errors(lease):
                if kept is None:
                    kept = await self._open_kept(slot, key, opener)
                else:
                    self.stats.reused += 1
                kept.jobs += 1
                try:
                    yield kept.ctx, kept.attachment
                    keep = True
                finally:
                    lease.active = False
                    keep = keep and not lease.gone
        finally:
            lease.active = False
            slot.leases.discard(lease)
            try:
                if kept is not None:
                    # Inline, like closing a fresh context: the next job of the key finds it.
                    await (self._tidy(kept) if keep else self._discard(kept))
            except asyncio.CancelledError:
                if kept is not None:  # cancelled while tidying: close it, in the background
                    self._spawn(self._discard(kept))
                raise
            finally:
                self._release(slot)

    async def _open_kept(self, slot: Slot, key: Hashable, opener: Opener) -> Kept:
        resources = contextlib.AsyncExitStack()
        try:
            proxy, attachment = await opener(resources)
            options = context_options(self._config, self._user_agent, no_cache=True)
            if proxy is not None:
                options["proxy"] = proxy
            ctx = await slot.browser.new_context(**options)
        except BaseException:
            await resources.aclose()
            raise
        self.stats.contexts += 1
        return Kept(key, slot, ctx, resources, attachment)

    async def _tidy(self, kept: Kept) -> None:
        """After a job: close its pages, clear cookies, then keep the context idle for the next
        job of its key, or close it."""
        ctx = kept.ctx
        cleared = self._usable(kept.slot) and await self._close_quietly(
            asyncio.gather(*(page.close() for page in ctx.pages), ctx.clear_cookies()),
            "context's pages",
        )
        if (
            not cleared
            or self._closed
            or not self._usable(kept.slot)
            or kept.jobs >= self._config.jobs_per_context
        ):
            await self._discard(kept)
            return
        kept.idle_since = time.monotonic()
        self._idle.append(kept)
        self._trim_idle()

    async def _discard(self, kept: Kept) -> None:
        """Close a kept context (unless its browser is going anyway), then its resources."""
        if not (kept.slot.dead or kept.slot.closing):
            await self._close_context(kept.ctx)
        try:
            await kept.resources.aclose()
        except Exception:  # cleanup path: the jobs' outcomes are decided
            log.exception("closing a browser context's resources failed")

    def _usable(self, slot: Slot) -> bool:
        return not (slot.dead or slot.retiring or slot.closing)

    def _pop_idle(self, key: Hashable) -> Kept | None:
        """The most recently used idle context of ``key`` in a browser with room, if any."""
        self._trim_idle()
        for i in range(len(self._idle) - 1, -1, -1):
            kept = self._idle[i]
            if kept.key == key and kept.slot.active < self._config.contexts_per_browser:
                return self._idle.pop(i)
        return None

    def _trim_idle(self) -> None:
        """Close idle contexts: those in a browser that takes no more work (retiring, closing,
        gone), those idle longer than ``idle_context_s``, and the least recently used beyond
        the pool's context capacity."""
        cap = self._config.browsers * self._config.contexts_per_browser
        expired = time.monotonic() - self._config.idle_context_s
        keep: list[Kept] = []
        for kept in self._idle:
            if not self._usable(kept.slot) or kept.idle_since < expired:
                self._spawn(self._discard(kept))
            else:
                keep.append(kept)
        for kept in keep[: max(0, len(keep) - cap)]:
            self._spawn(self._discard(kept))
        self._idle = keep[max(0, len(keep) - cap) :]

    async def _close_context(self, ctx: BrowserContext) -> bool:
        return await self._close_quietly(ctx.close(), "context")

    async def _close_quietly(self, closing: Awaitable[object], what: str) -> bool:
        # Cleanup path only: the job's own outcome is already decided; a failure here is logged
        # and handled by retiring the browser, never by failing the job.
        try:
            async with asyncio.timeout(self._config.close_timeout_s):
                await closing
        except (PlaywrightError, TimeoutError) as exc:
            log.warning("closing a browser %s failed: %s", what, exc)
            return False
        return True

    async def _acquire(
        self, proxy: ProxySettings | None, key: Hashable | None = None
    ) -> tuple[Slot, Kept | None]:
        """A browser with room for one more job, and an idle context of ``key`` in it if one
        is kept. Waits while the pool is full."""
        cap = self._config.browsers * self._config.contexts_per_browser
        while True:
            if self._closed:
                raise BrowserUnavailable("the browser pool is closed")
            if self._active + self._launching < cap:
                kept = self._pop_idle(key) if key is not None else None
                if kept is not None:
                    self._take(kept.slot)
                    return kept.slot, kept
                slot = choose_slot(self._live, self._config.contexts_per_browser)
                if slot is not None:
                    self._take(slot)
                    return slot, None
                if len(self._live) + self._launching < self._config.browsers:
                    return await self._launch_and_take(proxy), None
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _launch_and_take(self, proxy: ProxySettings | None) -> Slot:
        self._launching += 1
        try:
            browser = await self._launch(proxy)
        finally:
            self._launching -= 1
            self._wake()
        slot = Slot(browser)
        browser.on("disconnected", lambda _b: self._on_disconnected(slot))
        self._all.add(slot)
        if self._closed:
            self._close_later(slot)
            raise BrowserUnavailable("the browser pool is closed")
        self._live.append(slot)
        self._take(slot)
        return slot

    async def _launch(self, proxy: ProxySettings | None) -> Browser:
        if self._pw is None:
            raise RuntimeError("use the BrowserPool as an async context manager")
        cfg = self._config
        try:
            browser = await self._pw.chromium.launch(
                executable_path=cfg.executable_path,
                headless=cfg.headless,
                args=launch_args(cfg, proxy),
                timeout=cfg.launch_timeout_s * 1000,
                **browser_proxy(proxy),
            )
        except PlaywrightError as exc:
            raise BrowserUnavailable(f"Chromium did not start: {exc.message}") from exc
        self.stats.launches += 1
        return browser

    def _take(self, slot: Slot) -> None:
        slot.active += 1
        slot.served += 1
        self._active += 1
        if slot.served >= self._config.pages_per_browser:
            self._retire(slot)

    def _release(self, slot: Slot) -> None:
        slot.active -= 1
        self._active -= 1
        if slot.retiring and slot.active == 0:
            self._close_later(slot)
        self._wake()

    def _retire(self, slot: Slot) -> None:
        if slot.retiring:
            return
        slot.retiring = True
        self.stats.retired += 1
        if slot in self._live:
            self._live.remove(slot)
        if slot.active == 0:
            self._close_later(slot)
        self._trim_idle()

    def _on_disconnected(self, slot: Slot) -> None:
        if not slot.closing:
            self.stats.crashed += 1
            log.warning("a Chromium process disconnected with %d jobs open", slot.active)
        slot.dead = True
        for lease in list(slot.leases):
            lease.browser_gone()
        self._trim_idle()
        self._all.discard(slot)
        if slot in self._live:
            self._live.remove(slot)
        self._wake()

    def _close_later(self, slot: Slot) -> None:
        if slot.closing:
            return
        slot.closing = True
        for lease in list(slot.leases):
            lease.browser_gone()  # only on shutdown: retired browsers close once idle
        if slot in self._live:
            self._live.remove(slot)
        self._spawn(self._close_browser(slot))

    async def _close_browser(self, slot: Slot) -> None:
        if not slot.dead:
            await self._close_quietly(slot.browser.close(), "browser")
        self._all.discard(slot)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    # persistent profiles ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def persistent_context(
        self, tenant: str, session_id: str, proxy: ProxySettings | None = None
    ) -> AsyncIterator[BrowserContext]:
        """The persistent profile of ``(tenant, session_id)``, one job at a time; ``proxy`` as
        for :meth:`context` (its own Chromium, so the proxy applies to the whole browser).

        Each use launches Chromium on the profile's user-data-dir and closes it afterwards, so
        cookies, local storage and cache persist on disk between jobs. Chromium drops cookies
        without an expiry (session cookies) when it closes; they are saved beside the profile
        and restored, so a login kept in a session cookie survives between jobs too.
        """
        name = profile_dir_name(tenant, session_id)
        async with self._profile_locks.hold(name), self._persistent_sem:
            if self._closed or self._pw is None:
                raise BrowserUnavailable("the browser pool is closed")
            user_data_dir = await self._profiles_root() / name
            lease = JobLease()
            with crash_errors(lease):
                ctx = await self._launch_persistent(user_data_dir, proxy)
                ctx.on("close", lambda _c: lease.browser_gone())
                self._persistent_open.add(ctx)
                try:
                    await restore_session_cookies(ctx, user_data_dir)
                    yield ctx
                finally:
                    lease.active = False
                    self._persistent_open.discard(ctx)
                    if not lease.gone:
                        await save_session_cookies(ctx, user_data_dir)
                        await self._close_quietly(ctx.close(), "persistent context")

    async def _launch_persistent(
        self, user_data_dir: Path, proxy: ProxySettings | None
    ) -> BrowserContext:
        assert self._pw is not None
        cfg = self._config
        options = context_options(self._config, self._user_agent)
        if proxy is not None:
            options["proxy"] = proxy
        try:
            ctx = await self._pw.chromium.launch_persistent_context(
                user_data_dir,
                executable_path=cfg.executable_path,
                headless=cfg.headless,
                args=launch_args(cfg, proxy),
                timeout=cfg.launch_timeout_s * 1000,
                **options,
            )
        except PlaywrightError as exc:
            raise BrowserUnavailable(f"Chromium did not start on a profile: {exc.message}") from exc
        self.stats.persistent_launches += 1
        self.stats.contexts += 1
        return ctx

    async def _profiles_root(self) -> Path:
        if self._config.profiles_dir is not None:
            root = self._config.profiles_dir
            await asyncio.to_thread(root.mkdir, mode=0o700, parents=True, exist_ok=True)
            return root
        if self._tmp_profiles is None:
            self._tmp_profiles = Path(await asyncio.to_thread(tempfile.mkdtemp, "-profiles"))
        return self._tmp_profiles


def _browser_level(proxy: ProxySettings | None, server: str | None) -> ProxySettings | None:
    """A job's context proxy settings with ``server`` (when given) in place of its own."""
    if proxy is None or server is None:
        return proxy
    return {**proxy, "server": server}
