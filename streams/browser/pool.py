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
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from playwright.async_api import Browser, BrowserContext, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas import ErrorCode
from streams.browser.guard_proxy import ProxySettings
from streams.errors import TransientError

log = logging.getLogger(__name__)

__all__ = [
    "BASE_ARGS",
    "FULL_CHROMIUM",
    "HEADLESS_SHELL",
    "PROXIED_ARGS",
    "BrowserConfig",
    "BrowserCrashed",
    "BrowserPool",
    "BrowserUnavailable",
    "PoolStats",
    "profile_dir_name",
]

#: Debian's ``chromium-headless-shell``: Chromium's headless-only build (what Playwright itself
#: runs for headless Chromium). Measured with Chromium 156 on 2 cores, a plain 14 KB page in a
#: new context costs ~200 ms of CPU to load and ~50 ms more in the second after, against ~600 +
#: ~700 ms in the full browser, whose every new window also loads the omnibox popup's WebUI
#: (hundreds of chrome:// modules) in a renderer of its own.
HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"
#: Debian's full Chromium: needed only to run with a display (``headless=False``).
FULL_CHROMIUM = "/usr/bin/chromium"

#: Flags every Chromium we launch gets. The background-networking ones stop Chromium's own
#: connections (updates, safe browsing, sync, metrics): they are not ours to make, and on a
#: closed network they fail noisily.
BASE_ARGS: tuple[str, ...] = (
    "--no-sandbox",  # we run as root in containers; isolation is the container's job
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # WebRTC would otherwise send UDP (STUN, ICE) straight out, around any proxy: measured with
    # Chromium 156, a page's RTCPeerConnection reached a local STUN port with a per-context
    # proxy set. This Chromium honours --webrtc-ip-handling-policy; the --force- spelling
    # (Chrome's) is kept for builds that read that one instead.
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
)

#: Added to browsers launched for proxied jobs: Chromium's own resolver answers "not found" for
#: every name, so names are resolved (and checked) only by the proxy. DNS prefetch and anything
#: else that would resolve inside Chromium gets nothing. 127.0.0.1 (the guard proxy) is exempt.
PROXIED_ARGS: tuple[str, ...] = ("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",)

SESSION_COOKIES_FILE = "scrapifie-session-cookies.json"


class BrowserConfig(BaseModel):
    """How the browser tiers run Chromium."""

    model_config = ConfigDict(frozen=True)

    executable_path: str | None = Field(
        HEADLESS_SHELL,
        description=(
            "Chromium binary: Debian's headless shell by default (a third of the full browser's"
            f" CPU per page); {FULL_CHROMIUM} to run with a display. None uses Playwright's own"
            " download (not on Debian)."
        ),
    )
    headless: bool = Field(True, description="Run without a display.")
    browsers: int = Field(
        1,
        gt=0,
        description=(
            "Chromium processes for ephemeral contexts. One per two cores or so: on 2 cores,"
            " 4 jobs at once in 2 browsers rendered 1.7-1.9 pages/s against 3.0-3.4 in one."
        ),
    )
    contexts_per_browser: int = Field(
        4, gt=0, description="Jobs (contexts) open at once in one Chromium process."
    )
    pages_per_browser: int = Field(
        100, gt=0, description="Jobs one Chromium process serves before it is replaced."
    )
    jobs_per_context: int = Field(
        20,
        gt=0,
        description=(
            "Jobs one browser context serves, one after another, for the same tenant (and egress"
            " proxy) before it is closed; 1: a fresh context for every job. Pages and cookies"
            " are cleared between jobs; origin storage (localStorage, IndexedDB) is not."
        ),
    )
    idle_context_s: float = Field(
        30.0, gt=0, description="How long a kept context may wait for its tenant's next job."
    )
    persistent_contexts: int = Field(
        2, gt=0, description="Persistent profiles open at once (each is its own Chromium)."
    )
    profiles_dir: Path | None = Field(
        None,
        description="Where persistent profiles live (one dir per tenant+session). None: a "
        "temporary dir removed when the pool closes.",
    )
    launch_timeout_s: float = Field(30.0, gt=0, description="Deadline for Chromium to start.")
    close_timeout_s: float = Field(
        10.0, gt=0, description="Deadline for closing a context or browser before giving up."
    )
    viewport_width: int = Field(1280, gt=0, description="Page viewport width, CSS pixels.")
    viewport_height: int = Field(800, gt=0, description="Page viewport height, CSS pixels.")
    extra_args: tuple[str, ...] = Field((), description="More Chromium command-line flags.")

    @model_validator(mode="after")
    def _headful_needs_the_full_browser(self) -> BrowserConfig:
        if not self.headless and (self.executable_path or "").endswith("headless-shell"):
            raise ValueError(
                f"the headless shell cannot show a window: with headless=False set "
                f"executable_path to {FULL_CHROMIUM}"
            )
        return self


class BrowserCrashed(TransientError):
    """The Chromium process serving this job went away (crash, kill, OOM). Retry the job."""

    def __init__(self, message: str = "the browser process ended during the job") -> None:
        super().__init__(ErrorCode.CONNECTION_ERROR, message)


class BrowserUnavailable(TransientError):
    """Chromium could not be started (or the pool is closed)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INTERNAL, message)


def profile_dir_name(tenant: str, session_id: str) -> str:
    """Directory name of the profile of ``(tenant, session_id)``: sha256 of both, unambiguous.

    The tenant is part of the hash, so two tenants using the same session id get two profiles.
    """
    if not tenant or not session_id:
        raise ValueError("a persistent profile needs both a tenant and a session id")
    return hashlib.sha256(json.dumps([tenant, session_id]).encode()).hexdigest()


@dataclass(slots=True)
class PoolStats:
    """Counters since the pool started (for metrics and tests)."""

    launches: int = 0
    persistent_launches: int = 0
    retired: int = 0
    crashed: int = 0
    contexts: int = 0  # contexts opened
    reused: int = 0  # jobs served by a context an earlier job of the same key used


@dataclass(eq=False, slots=True)
class _Slot:
    """One Chromium process and its accounting."""

    browser: Browser
    active: int = 0  # contexts open now
    served: int = 0  # contexts handed out in all
    retiring: bool = False  # takes no new work; closed when active drops to 0
    dead: bool = False  # disconnected
    closing: bool = False  # we asked it to close
    leases: set[_Lease] = field(default_factory=set)  # jobs inside a context now


@dataclass(eq=False, slots=True)
class _Kept:
    """A context that serves the jobs of one key, one after another, with what the opener of
    :meth:`BrowserPool.keyed_context` attached to it (closed after the context)."""

    key: Hashable
    slot: _Slot
    ctx: BrowserContext
    resources: contextlib.AsyncExitStack
    attachment: Any
    jobs: int = 0
    idle_since: float = 0.0


#: What :meth:`BrowserPool.keyed_context` calls to open a new context's resources: it enters
#: them into the stack (closed after the context) and returns the context's proxy settings and
#: the attachment the context's jobs get.
Opener = Callable[[contextlib.AsyncExitStack], Awaitable[tuple[ProxySettings | None, Any]]]


class _Lease:
    """One job inside a context. When its browser goes away the job's task is cancelled (a
    job awaiting Playwright could otherwise hang: ``new_page`` never returns if Chromium dies
    under it, measured with Playwright 1.65), and the context manager turns that cancellation
    into :class:`BrowserCrashed`, the way ``asyncio.timeout`` turns its own into TimeoutError.
    """

    __slots__ = ("_base", "_cancelled", "_task", "active", "gone")

    def __init__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("browser contexts are used from a task")
        self._task = task
        self._base = task.cancelling()
        self._cancelled = False
        self.active = True  # inside the job's body (cancelling it is safe)
        self.gone = False

    def browser_gone(self) -> None:
        self.gone = True
        if self.active and not self._cancelled:
            self._cancelled = True
            self._task.cancel("the browser went away")

    def absorb_cancel(self) -> bool:
        """Whether the CancelledError being handled is ours (and then it is uncancelled)."""
        return self._cancelled and self._task.uncancel() <= self._base


@contextlib.contextmanager
def _crash_errors(lease: _Lease) -> Iterator[None]:
    try:
        yield
    except asyncio.CancelledError:
        if lease.absorb_cancel():
            raise BrowserCrashed() from None
        raise
    except PlaywrightError as exc:
        if lease.gone:
            raise BrowserCrashed() from exc
        raise


def choose_slot(slots: list[_Slot], per_browser: int) -> _Slot | None:
    """The live browser with the fewest open contexts that still has room, or None."""
    best: _Slot | None = None
    for slot in slots:
        if slot.dead or slot.retiring or slot.active >= per_browser:
            continue
        if best is None or slot.active < best.active:
            best = slot
    return best


class BrowserPool:
    """Owns Chromium processes; ``async with pool.context() as ctx`` for one job.

    ``user_agent`` is sent by every context (the identifying User-Agent from FetchConfig).
    """

    def __init__(self, config: BrowserConfig, *, user_agent: str) -> None:
        self._config = config
        self._user_agent = user_agent
        self._pw: Playwright | None = None
        self._live: list[_Slot] = []  # accepting work (not retiring, not dead)
        self._all: set[_Slot] = set()  # every browser not yet closed
        self._launching = 0
        self._active = 0  # contexts open in all ephemeral browsers
        self._waiters: list[asyncio.Future[None]] = []
        self._idle: list[_Kept] = []  # kept contexts between jobs, least recently used first
        self._bg: set[asyncio.Task[None]] = set()
        self._closed = False
        self._persistent_sem = asyncio.Semaphore(config.persistent_contexts)
        self._profile_locks: dict[str, tuple[asyncio.Lock, int]] = {}
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
        lease = _Lease()
        slot, _ = await self._acquire(_browser_level(proxy, launch_proxy))
        slot.leases.add(lease)
        try:
            with _crash_errors(lease):
                options = self._context_options(no_cache=True)
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
        lease = _Lease()
        launch: ProxySettings | None = {"server": launch_proxy} if launch_proxy else None
        slot, kept = await self._acquire(launch, key)
        slot.leases.add(lease)
        keep = False
        try:
            with _crash_errors(lease):
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

    async def _open_kept(self, slot: _Slot, key: Hashable, opener: Opener) -> _Kept:
        resources = contextlib.AsyncExitStack()
        try:
            proxy, attachment = await opener(resources)
            options = self._context_options(no_cache=True)
            if proxy is not None:
                options["proxy"] = proxy
            ctx = await slot.browser.new_context(**options)
        except BaseException:
            await resources.aclose()
            raise
        self.stats.contexts += 1
        return _Kept(key, slot, ctx, resources, attachment)

    async def _tidy(self, kept: _Kept) -> None:
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

    async def _discard(self, kept: _Kept) -> None:
        """Close a kept context (unless its browser is going anyway), then its resources."""
        if not (kept.slot.dead or kept.slot.closing):
            await self._close_context(kept.ctx)
        try:
            await kept.resources.aclose()
        except Exception:  # cleanup path: the jobs' outcomes are decided
            log.exception("closing a browser context's resources failed")

    def _usable(self, slot: _Slot) -> bool:
        return not (slot.dead or slot.retiring or slot.closing)

    def _pop_idle(self, key: Hashable) -> _Kept | None:
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
        keep: list[_Kept] = []
        for kept in self._idle:
            if not self._usable(kept.slot) or kept.idle_since < expired:
                self._spawn(self._discard(kept))
            else:
                keep.append(kept)
        for kept in keep[: max(0, len(keep) - cap)]:
            self._spawn(self._discard(kept))
        self._idle = keep[max(0, len(keep) - cap) :]

    def _context_options(self, *, no_cache: bool = False) -> dict[str, Any]:
        options: dict[str, Any] = {
            "user_agent": self._user_agent,
            "service_workers": "block",  # they would fetch outside page.route
            "accept_downloads": False,
            "viewport": {
                "width": self._config.viewport_width,
                "height": self._config.viewport_height,
            },
        }
        if no_cache:
            # Chromium reads a request's no-cache as "fetch from the network": a kept context's
            # HTTP cache (a page the tenant fetched before) never stands in for a fetch.
            options["extra_http_headers"] = {"Cache-Control": "no-cache"}
        return options

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
    ) -> tuple[_Slot, _Kept | None]:
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

    async def _launch_and_take(self, proxy: ProxySettings | None) -> _Slot:
        self._launching += 1
        try:
            browser = await self._launch(proxy)
        finally:
            self._launching -= 1
            self._wake()
        slot = _Slot(browser)
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
                args=_launch_args(cfg, proxy),
                timeout=cfg.launch_timeout_s * 1000,
                **_browser_proxy(proxy),
            )
        except PlaywrightError as exc:
            raise BrowserUnavailable(f"Chromium did not start: {exc.message}") from exc
        self.stats.launches += 1
        return browser

    def _take(self, slot: _Slot) -> None:
        slot.active += 1
        slot.served += 1
        self._active += 1
        if slot.served >= self._config.pages_per_browser:
            self._retire(slot)

    def _release(self, slot: _Slot) -> None:
        slot.active -= 1
        self._active -= 1
        if slot.retiring and slot.active == 0:
            self._close_later(slot)
        self._wake()

    def _retire(self, slot: _Slot) -> None:
        if slot.retiring:
            return
        slot.retiring = True
        self.stats.retired += 1
        if slot in self._live:
            self._live.remove(slot)
        if slot.active == 0:
            self._close_later(slot)
        self._trim_idle()

    def _on_disconnected(self, slot: _Slot) -> None:
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

    def _close_later(self, slot: _Slot) -> None:
        if slot.closing:
            return
        slot.closing = True
        for lease in list(slot.leases):
            lease.browser_gone()  # only on shutdown: retired browsers close once idle
        if slot in self._live:
            self._live.remove(slot)
        self._spawn(self._close_browser(slot))

    async def _close_browser(self, slot: _Slot) -> None:
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
        async with self._profile_lock(name), self._persistent_sem:
            if self._closed or self._pw is None:
                raise BrowserUnavailable("the browser pool is closed")
            user_data_dir = await self._profiles_root() / name
            lease = _Lease()
            with _crash_errors(lease):
                ctx = await self._launch_persistent(user_data_dir, proxy)
                ctx.on("close", lambda _c: lease.browser_gone())
                self._persistent_open.add(ctx)
                try:
                    await self._restore_session_cookies(ctx, user_data_dir)
                    yield ctx
                finally:
                    lease.active = False
                    self._persistent_open.discard(ctx)
                    if not lease.gone:
                        await self._save_session_cookies(ctx, user_data_dir)
                        await self._close_quietly(ctx.close(), "persistent context")

    async def _launch_persistent(
        self, user_data_dir: Path, proxy: ProxySettings | None
    ) -> BrowserContext:
        assert self._pw is not None
        cfg = self._config
        options = self._context_options()
        if proxy is not None:
            options["proxy"] = proxy
        try:
            ctx = await self._pw.chromium.launch_persistent_context(
                user_data_dir,
                executable_path=cfg.executable_path,
                headless=cfg.headless,
                args=_launch_args(cfg, proxy),
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

    async def _restore_session_cookies(self, ctx: BrowserContext, user_data_dir: Path) -> None:
        path = user_data_dir / SESSION_COOKIES_FILE
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return
        try:
            cookies = json.loads(raw)
        except ValueError:
            log.warning("ignoring unreadable session cookies in %s", path)
            return
        if isinstance(cookies, list) and cookies:
            await ctx.add_cookies(cookies)

    async def _save_session_cookies(self, ctx: BrowserContext, user_data_dir: Path) -> None:
        try:
            cookies = [c for c in await ctx.cookies() if c.get("expires", -1) == -1]
        except PlaywrightError as exc:
            log.warning("could not read session cookies: %s", exc.message)
            return
        path = user_data_dir / SESSION_COOKIES_FILE
        await asyncio.to_thread(_write_private, path, json.dumps(cookies).encode())

    @contextlib.asynccontextmanager
    async def _profile_lock(self, name: str) -> AsyncIterator[None]:
        lock, users = self._profile_locks.get(name, (asyncio.Lock(), 0))
        self._profile_locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._profile_locks[name]
            if users == 1:
                del self._profile_locks[name]
            else:
                self._profile_locks[name] = (lock, users - 1)


def _launch_args(cfg: BrowserConfig, proxy: ProxySettings | None) -> list[str]:
    return [*BASE_ARGS, *(PROXIED_ARGS if proxy is not None else ()), *cfg.extra_args]


def _browser_level(proxy: ProxySettings | None, server: str | None) -> ProxySettings | None:
    """A job's context proxy settings with ``server`` (when given) in place of its own."""
    if proxy is None or server is None:
        return proxy
    return {**proxy, "server": server}


def _browser_proxy(proxy: ProxySettings | None) -> dict[str, Any]:
    """Browser-level proxy for a launch: a server and bypass rules. Per-context proxies work
    without it (Linux, Playwright 1.65, Chromium 156); it is there so that traffic outside our
    contexts also meets the guard proxy, whose shared port refuses it. A persistent profile's
    browser serves one job, so it gets that job's own proxy."""
    if proxy is None:
        return {}
    return {"proxy": {"server": proxy["server"], "bypass": proxy.get("bypass", "<-loopback>")}}


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
