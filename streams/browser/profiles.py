"""Persistent profiles (stealth tier): one Chromium user-data-dir per (tenant, session_id),
named by a hash of both, its session cookies kept beside it, one job at a time per profile.
:meth:`streams.browser.pool.BrowserPool.persistent_context` opens them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import BrowserContext
from playwright.async_api import Error as PlaywrightError

log = logging.getLogger(__name__)

__all__ = [
    "SESSION_COOKIES_FILE",
    "ProfileLocks",
    "profile_dir_name",
    "restore_session_cookies",
    "save_session_cookies",
]

SESSION_COOKIES_FILE = "scrapifie-session-cookies.json"


def profile_dir_name(tenant: str, session_id: str) -> str:
    """Directory name of the profile of ``(tenant, session_id)``: sha256 of both, unambiguous.

    The tenant is part of the hash, so two tenants using the same session id get two profiles.
    """
    if not tenant or not session_id:
        raise ValueError("a persistent profile needs both a tenant and a session id")
    return hashlib.sha256(json.dumps([tenant, session_id]).encode()).hexdigest()


class ProfileLocks:
    """One lock per profile name (per process), so a profile serves one job at a time; a
    name's lock is dropped when no job holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


async def restore_session_cookies(ctx: BrowserContext, user_data_dir: Path) -> None:
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


async def save_session_cookies(ctx: BrowserContext, user_data_dir: Path) -> None:
    try:
        cookies = [c for c in await ctx.cookies() if c.get("expires", -1) == -1]
    except PlaywrightError as exc:
        log.warning("could not read session cookies: %s", exc.message)
        return
    path = user_data_dir / SESSION_COOKIES_FILE
    await asyncio.to_thread(_write_private, path, json.dumps(cookies).encode())


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
