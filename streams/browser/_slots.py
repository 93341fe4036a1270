"""The browser pool's bookkeeping: a Chromium process's :class:`Slot`, a context :class:`Kept`
for the next job of its key, a job's :class:`JobLease` on a context (how a browser that goes
away reaches the job), and the choice of a browser for the next job."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Browser, BrowserContext
from playwright.async_api import Error as PlaywrightError

from streams.browser.errors import BrowserCrashed

__all__ = ["JobLease", "Kept", "Slot", "choose_slot", "crash_errors"]


@dataclass(eq=False, slots=True)
class Slot:
    """One Chromium process and its accounting."""

    browser: Browser
    active: int = 0  # contexts open now
    served: int = 0  # contexts handed out in all
    retiring: bool = False  # takes no new work; closed when active drops to 0
    dead: bool = False  # disconnected
    closing: bool = False  # we asked it to close
    leases: set[JobLease] = field(default_factory=set)  # jobs inside a context now


@dataclass(eq=False, slots=True)
class Kept:
    """A context that serves the jobs of one key, one after another, with what the opener of
    :meth:`BrowserPool.keyed_context` attached to it (closed after the context)."""

    key: Hashable
    slot: Slot
    ctx: BrowserContext
    resources: contextlib.AsyncExitStack
    attachment: Any
    jobs: int = 0
    idle_since: float = 0.0


class JobLease:
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
def crash_errors(lease: JobLease) -> Iterator[None]:
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


def choose_slot(slots: list[Slot], per_browser: int) -> Slot | None:
    """The live browser with the fewest open contexts that still has room, or None."""
    best: Slot | None = None
    for slot in slots:
        if slot.dead or slot.retiring or slot.active >= per_browser:
            continue
        if best is None or slot.active < best.active:
            best = slot
    return best
