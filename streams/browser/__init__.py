"""The browser tiers: pages rendered in Chromium (Playwright), every connection through the guard
proxy.

- ``config``: :class:`BrowserConfig`, the Chromium binary, its flags and launch options (no
  Playwright: the settings object holds a :class:`BrowserConfig`);
- ``request``: :class:`BrowserRequest` and :class:`BrowserResponse`;
- ``fetcher``: :class:`BrowserFetcher`, the tiers' :class:`~streams.fetchers.base.Fetcher`;
- ``pool``: :class:`BrowserPool`, Chromium processes handing out contexts (``profiles``: the
  stealth tier's persistent profiles; ``_slots``: the pool's bookkeeping);
- ``guard_proxy``: :class:`GuardProxy`, the forward proxy that checks every connection
  (``lease``: a context's identity there; ``http1``: its HTTP/1.1 framing);
- ``errors``: the tiers' errors, and Playwright's mapped to ours.

The names below are imported on first use, so importing this package (or its ``config``) does
not import Playwright.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.browser.config import FULL_CHROMIUM, HEADLESS_SHELL, BrowserConfig
    from streams.browser.errors import BrowserCrashed, BrowserUnavailable, map_net_error
    from streams.browser.fetcher import BrowserFetcher
    from streams.browser.guard_proxy import GuardProxy
    from streams.browser.pool import BrowserPool, PoolStats
    from streams.browser.request import BrowserRequest, BrowserResponse

__all__ = [
    "FULL_CHROMIUM",
    "HEADLESS_SHELL",
    "BrowserConfig",
    "BrowserCrashed",
    "BrowserFetcher",
    "BrowserPool",
    "BrowserRequest",
    "BrowserResponse",
    "BrowserUnavailable",
    "GuardProxy",
    "PoolStats",
    "map_net_error",
]

_MODULE_OF = {
    "FULL_CHROMIUM": "config",
    "HEADLESS_SHELL": "config",
    "BrowserConfig": "config",
    "BrowserCrashed": "errors",
    "BrowserFetcher": "fetcher",
    "BrowserPool": "pool",
    "BrowserRequest": "request",
    "BrowserResponse": "request",
    "BrowserUnavailable": "errors",
    "GuardProxy": "guard_proxy",
    "PoolStats": "pool",
    "map_net_error": "errors",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        found = importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "playwright":
            raise
        raise ModuleNotFoundError(
            f"{__name__}.{name} needs Playwright: pip install 'scrapifie[browser]'",
            name=exc.name,
        ) from exc
    return getattr(found, name)
