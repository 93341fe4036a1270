"""Egress pools: named sets of forward proxies with per-proxy health and per-provider breakers.

- A pool is a list of proxy URLs from settings (``datacenter``, ``residential``, ...); each tier
  has a default pool and a job may name another. No pool configured means direct connections.
- Per proxy: consecutive failures open a cooldown that doubles each time (up to a cap); after
  the cooldown the proxy gets one trial request (half-open) and recovers on success. A proxy
  that keeps failing stays out for the longest cooldown: evicted, yet still probed, so it can
  come back.
- Per provider (the proxy host): when most recent outcomes failed, the whole provider is
  skipped for a while (circuit breaker), so a provider outage does not cost one failure per
  proxy before traffic moves.
- ``session_id`` pins a session to one proxy while that proxy is healthy (sticky sessions).
- Credentials never leave this module in text: proxies are named by ``label`` (scheme://host:port).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from schemas import ErrorCode
from streams.errors import FatalError, FetchError, TransientError
from streams.fetchers.base import Fetcher, FetchRequest, FetchResponse

log = logging.getLogger(__name__)


class EgressConfig(BaseModel):
    """Proxy pools. Example: ``SCRAPIFIE_EGRESS__POOLS='{"datacenter": ["http://u:p@dc1:3128"]}'``."""

    model_config = ConfigDict(frozen=True)

    pools: dict[str, list[SecretStr]] = Field(
        default_factory=dict, description="Pool name → proxy URLs."
    )
    tier_defaults: dict[str, str] = Field(
        default_factory=dict, description="Tier → pool used when a job names none (absent: direct)."
    )
    failures_to_cooldown: int = Field(
        2, gt=0, description="Consecutive failures that bench a proxy."
    )
    cooldown_s: float = Field(15.0, gt=0, description="First cooldown; doubles on each relapse.")
    max_cooldown_s: float = Field(600.0, gt=0, description="Longest cooldown (an evicted proxy).")
    breaker_window: int = Field(20, gt=0, description="Recent outcomes kept per provider.")
    breaker_failure_ratio: float = Field(
        0.8, gt=0, le=1, description="Failure ratio that opens it."
    )
    breaker_open_s: float = Field(30.0, gt=0, description="How long an open provider is skipped.")


class NoProxyAvailable(Exception):
    """Every proxy of the pool is cooling down or its provider's breaker is open."""


@dataclass(eq=False)
class Proxy:
    url: SecretStr
    label: str
    provider: str
    failures: int = 0
    cooldown_s: float = 0.0
    benched_until: float = 0.0
    relapses: int = 0

    def __repr__(self) -> str:
        return f"Proxy({self.label})"


@dataclass
class _Provider:
    outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=20))
    open_until: float = 0.0


def _label(url: str) -> tuple[str, str]:
    u = httpx.URL(url)
    return f"{u.scheme}://{u.host}:{u.port or 80}", u.host


class EgressPools:
    def __init__(self, config: EgressConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._pools: dict[str, list[Proxy]] = {}
        self._providers: dict[str, _Provider] = {}
        for name, urls in config.pools.items():
            proxies = []
            for secret in urls:
                label, provider = _label(secret.get_secret_value())
                proxies.append(Proxy(secret, label, provider))
                self._providers.setdefault(provider, _Provider(deque(maxlen=config.breaker_window)))
            self._pools[name] = proxies
        self._rr: dict[str, itertools.count[int]] = {n: itertools.count() for n in self._pools}
        self._sticky: dict[tuple[str, str], Proxy] = {}

    @property
    def names(self) -> Sequence[str]:
        return list(self._pools)

    def all_proxies(self) -> list[Proxy]:
        return [p for ps in self._pools.values() for p in ps]

    def pool_for(self, tier: str, requested: str | None) -> str | None:
        """The pool a job uses (None: direct). Raises KeyError for an unknown requested pool."""
        name = requested or self._config.tier_defaults.get(tier)
        if name is None:
            return None
        if name not in self._pools:
            raise KeyError(name)
        return name

    def _usable(self, proxy: Proxy, now: float) -> bool:
        return proxy.benched_until <= now and self._providers[proxy.provider].open_until <= now

    def choose(
        self, pool: str, session_id: str | None = None, exclude: frozenset[Proxy] = frozenset()
    ) -> Proxy:
        now = self._clock()
        proxies = [p for p in self._pools[pool] if p not in exclude]
        healthy = [p for p in proxies if self._usable(p, now)]
        if not healthy:
            raise NoProxyAvailable(
                f"no usable proxy in pool {pool!r} ({len(proxies)} cooling down)"
            )
        if session_id is not None:
            key = (pool, session_id)
            pinned = self._sticky.get(key)
            if pinned is None or pinned not in healthy:
                digest = int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big")
                pinned = healthy[digest % len(healthy)]
                self._sticky[key] = pinned
            return pinned
        return healthy[next(self._rr[pool]) % len(healthy)]

    def report(self, proxy: Proxy, ok: bool) -> None:
        now = self._clock()
        provider = self._providers[proxy.provider]
        provider.outcomes.append(ok)
        cfg = self._config
        if ok:
            if proxy.relapses and proxy.failures:
                log.info("proxy %s recovered", proxy.label)
            proxy.failures = 0
            proxy.relapses = 0
            proxy.cooldown_s = 0.0
            return
        proxy.failures += 1
        if proxy.failures >= cfg.failures_to_cooldown or proxy.relapses:
            proxy.relapses += 1
            proxy.cooldown_s = min(cfg.max_cooldown_s, cfg.cooldown_s * 2 ** (proxy.relapses - 1))
            proxy.benched_until = now + proxy.cooldown_s
            proxy.failures = 0
            log.warning(
                "proxy %s benched for %.0fs (relapse %d)",
                proxy.label,
                proxy.cooldown_s,
                proxy.relapses,
            )
        window = provider.outcomes
        if len(window) >= min(5, cfg.breaker_window):
            failed = sum(1 for o in window if not o)
            if failed / len(window) >= cfg.breaker_failure_ratio and provider.open_until <= now:
                provider.open_until = now + cfg.breaker_open_s
                window.clear()
                log.warning(
                    "egress provider %s: breaker open for %.0fs", proxy.provider, cfg.breaker_open_s
                )


# Errors that, through a proxy, count against the proxy's health.
_PROXY_FAULTS = frozenset({ErrorCode.PROXY_ERROR, ErrorCode.CONNECTION_ERROR, ErrorCode.TIMEOUT})


class EgressFetcher:
    """A Fetcher that sends each request through its egress pool (or directly when the tier has
    none). A proxy that fails to carry a request is reported and another is tried (3 at most),
    so a dying proxy costs no job. ``on_result(pool, proxy_label, ok)`` feeds metrics."""

    def __init__(
        self,
        inner: Fetcher,
        pools: EgressPools,
        tier: str,
        on_result: Callable[[str, str, bool], None] = lambda _p, _l, _ok: None,
        default_timeout_s: float | None = None,
    ) -> None:
        self._default_timeout_s = default_timeout_s
        self._inner = inner
        self._pools = pools
        self._tier = tier
        self._on_result = on_result

    def _short_deadline(self, request: FetchRequest) -> bool:
        """A deadline the job chose below the deployment's: its timeouts say nothing about the
        proxy, so they are not held against it (one tenant could bench every proxy)."""
        chosen, default = request.timeout_s, self._default_timeout_s
        return chosen is not None and default is not None and chosen < default

    async def fetch(self, request: FetchRequest) -> FetchResponse:
        try:
            pool = self._pools.pool_for(self._tier, request.egress_pool)
        except KeyError:
            names = ", ".join(self._pools.names) or "none configured"
            raise FatalError(
                ErrorCode.INVALID_REQUEST,
                f"unknown egress pool {request.egress_pool!r} (pools: {names})",
            ) from None
        if pool is None:
            return await self._inner.fetch(request)
        tried: set[Proxy] = set()
        while True:
            try:
                proxy = self._pools.choose(pool, request.session_id, frozenset(tried))
            except NoProxyAvailable as exc:
                error = TransientError(ErrorCode.PROXY_ERROR, str(exc))
                error.egress_pool = pool
                raise error from exc
            try:
                response = await self._inner.fetch(
                    replace(request, proxy=proxy.url.get_secret_value())
                )
            except FetchError as exc:
                exc.egress_pool = pool
                failed = exc.code in _PROXY_FAULTS
                if not (exc.code is ErrorCode.TIMEOUT and self._short_deadline(request)):
                    self._pools.report(proxy, ok=not failed)
                    self._on_result(pool, proxy.label, not failed)
                if exc.code is not ErrorCode.PROXY_ERROR or len(tried) >= 2:
                    raise
                tried.add(proxy)
                continue
            self._pools.report(proxy, ok=True)
            self._on_result(pool, proxy.label, True)
            return replace(response, egress_pool=pool)
