"""The gateway's API keys: ``Authorization: Bearer <key>`` to a tenant id, or an ``ApiError``.

Keys are stored hashed (SHA-256) in ``api_keys``. A key's state is read from PostgreSQL at most
once per ``ttl_s`` per gateway process, so a revocation or a disabled tenant takes effect on every
replica within ``ttl_s`` while the database is up. While it is down (the lookup raises the 503
``ApiError``, or takes over ``stale_timeout_s`` for a key seen before), keys this process last saw
valid keep working, so jobs still flow into Kafka, and the database is asked again only after
``outage_hold_s``; a key never seen before answers that 503.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from connectors.gateway.api import ApiError

__all__ = ["KEY_CACHE_TTL_S", "KEY_SQL", "Authenticator"]

KEY_CACHE_TTL_S: Final = 1.0
_STALE_TIMEOUT_S: Final = 1.0
_OUTAGE_HOLD_S: Final = 5.0
# One row per key: its tenant, whether the key is revoked and whether the tenant is enabled.
KEY_SQL: Final = (
    "SELECT k.tenant_id, k.revoked_at IS NOT NULL AS revoked, t.enabled"
    " FROM api_keys k JOIN tenants t ON t.tenant_id = k.tenant_id WHERE k.key_sha256 = %s"
)

Lookup = Callable[[str], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class _Known:
    tenant: str
    enabled: bool
    checked_at: float


class Authenticator:
    """Checks bearer keys against ``lookup(sha256_hex)`` (a ``KEY_SQL`` row or None; raises the
    503 ``ApiError`` while the database is away), remembering valid keys for ``ttl_s``."""

    def __init__(
        self,
        lookup: Lookup,
        ttl_s: float = KEY_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        stale_timeout_s: float = _STALE_TIMEOUT_S,
        outage_hold_s: float = _OUTAGE_HOLD_S,
    ) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._clock = clock
        self._stale_timeout_s = stale_timeout_s
        self._outage_hold_s = outage_hold_s
        self._outage_until = float("-inf")
        self._known: dict[str, _Known] = {}
        # One refresh at a time per known key: when its entry expires under load, the requests
        # in flight wait for one query instead of each sending its own.
        self._refreshing: dict[str, asyncio.Lock] = {}

    async def tenant(self, authorization: str | None) -> str:
        """The tenant of the ``Authorization`` header's key: 401 ``unauthorized`` for none, an
        unknown or a revoked key; 403 ``tenant_disabled``; 503 ``unavailable``."""
        auth = authorization or ""
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <api key>'")
        # surrogateescape: aiohttp keeps non-UTF-8 header bytes as lone surrogates; hash the bytes.
        digest = hashlib.sha256(auth[7:].strip().encode("utf-8", "surrogateescape")).hexdigest()
        known = self._fresh(digest)
        if known is None and digest in self._known:
            lock = self._refreshing.setdefault(digest, asyncio.Lock())
            async with lock:
                known = self._fresh(digest) or await self._check(digest)
        elif known is None:
            known = await self._check(digest)
        if not known.enabled:
            raise ApiError(
                403,
                "tenant_disabled",
                f"tenant {known.tenant!r} is disabled; ask the operator to enable it",
            )
        return known.tenant

    def _fresh(self, digest: str) -> _Known | None:
        known = self._known.get(digest)
        if known is None:
            return None
        now = self._clock()
        if now - known.checked_at < self._ttl_s or now < self._outage_until:
            return known
        return None

    async def _check(self, digest: str) -> _Known:
        stale = self._known.get(digest)
        try:
            if stale is None:
                row = await self._lookup(digest)
            else:
                async with asyncio.timeout(self._stale_timeout_s):
                    row = await self._lookup(digest)
        except (ApiError, TimeoutError) as exc:
            if stale is None or (isinstance(exc, ApiError) and exc.code != "unavailable"):
                raise
            # Database away: serve the keys last seen valid (jobs still flow into Kafka) and
            # spare every request the wait for a connection until the hold is over.
            self._outage_until = self._clock() + self._outage_hold_s
            return stale
        if row is None or row["revoked"]:
            self._forget(digest)
            reason = "unknown API key" if row is None else "this API key was revoked"
            raise ApiError(401, "unauthorized", reason)
        known = _Known(str(row["tenant_id"]), bool(row["enabled"]), self._clock())
        self._known[digest] = known
        return known

    def _forget(self, digest: str) -> None:
        self._known.pop(digest, None)
        self._refreshing.pop(digest, None)
