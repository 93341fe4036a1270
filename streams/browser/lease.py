"""A browser context's identity at the guard proxy (:class:`Lease`), the upstream egress proxy
its traffic may go through (:class:`Upstream`). How the guard proxy uses them:
``streams/browser/guard_proxy.py``."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from schemas import ErrorCode
from streams.browser.config import ProxySettings
from streams.errors import FetchError
from streams.fetchers.ssrf import SSRFBlocked

__all__ = ["Lease", "Upstream"]


@dataclass(frozen=True, slots=True, repr=False)
class Upstream:
    """An upstream forward proxy (``http://[user:pass@]host:port``). ``authorization`` is the
    ``Proxy-Authorization`` value built from the userinfo; only ``label`` is ever shown."""

    host: str
    port: int
    authorization: str | None
    label: str

    @classmethod
    def parse(cls, url: str) -> Upstream:
        """Raises ValueError (whose message never holds the credentials)."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "http":
            raise ValueError(
                f"browser tiers reach upstream proxies over http:// only, not {parts.scheme!r}"
            )
        try:
            host, port = parts.hostname, parts.port or 80
        except ValueError:
            raise ValueError("the upstream proxy URL has an invalid port") from None
        if not host:
            raise ValueError("the upstream proxy URL has no host")
        shown = f"[{host}]" if ":" in host else host
        auth = None
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            auth = "Basic " + base64.b64encode(userinfo.encode()).decode("ascii")
        return cls(host, port, auth, f"http://{shown}:{port}")

    def __repr__(self) -> str:
        return f"Upstream({self.label})"


@dataclass(eq=False, slots=True, repr=False)
class Lease:
    """One browser context's identity at the guard proxy, and what happened to its traffic.

    ``failures`` maps ``(host, port)`` (host lower-case, no brackets) to the last error met
    reaching it: :class:`~streams.fetchers.ssrf.SSRFBlocked` when the guard refused it, a
    :class:`TransientError` with ``PROXY_ERROR`` when the upstream proxy failed, else the DNS
    or connect error.
    """

    upstream: Upstream | None
    marker: str
    port: int = 0  # the lease's own listening port on 127.0.0.1
    failures: dict[tuple[str, int], FetchError] = field(default_factory=dict)
    refusals: int = 0
    upstream_failures: int = 0
    connections: int = 0  # connections served on the lease's port
    active: bool = True
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def forget_failures(self) -> None:
        """Start a new job on this lease: failures met so far were the earlier jobs'."""
        self.failures.clear()

    def failure(self, host: str, port: int) -> FetchError | None:
        return self.failures.get((_norm_host(host), port))

    def record(self, host: str, port: int, error: FetchError) -> None:
        self.failures[(_norm_host(host), port)] = error
        if isinstance(error, SSRFBlocked):
            self.refusals += 1
        elif error.code is ErrorCode.PROXY_ERROR:
            self.upstream_failures += 1

    @property
    def server(self) -> str:
        """The lease's proxy URL (``http://127.0.0.1:PORT``)."""
        return f"http://127.0.0.1:{self.port}"

    def proxy_settings(self) -> ProxySettings:
        """Playwright proxy settings for this lease. ``<-loopback>`` is written out although
        Playwright adds it for Chromium unless PLAYWRIGHT_DISABLE_FORCED_CHROMIUM_PROXIED_LOOPBACK
        is set: it removes Chromium's implicit bypass of loopback and link-local targets, so
        even with that variable set nothing goes around the proxy."""
        return {"server": self.server, "bypass": "<-loopback>"}

    def __repr__(self) -> str:
        via = self.upstream.label if self.upstream else "direct"
        return f"Lease({via}, refusals={self.refusals}, upstream_failures={self.upstream_failures})"


def _norm_host(host: str) -> str:
    return host.strip("[]").lower()
