"""Browser tier vs a raw Playwright loop at equal concurrency (new context per page, and reused
contexts): a placeholder until the browser tier exists.

When it lands, ``measure_browser`` should run (1) a raw Playwright loop with Debian's Chromium
(``/usr/bin/chromium``) over the same URL list, once with a new context per page and once with a
pool of reused contexts, and (2) the browser tier end to end through ``scrape.browser``, at the
same concurrency, and return their pages/s next to this record's keys.
"""

from __future__ import annotations

from typing import Any

NOT_BUILT = "not measured: browser tier not built"


def browser_tier_exists() -> bool:
    from streams.app import SUPPORTED_TIERS

    return "browser" in SUPPORTED_TIERS


def measure_browser(urls: list[str], concurrency: int) -> dict[str, Any]:
    """The browser-tier comparison (item 4 of the benchmark issue); not written yet."""
    status = NOT_BUILT
    if browser_tier_exists():
        status = "not measured: the browser tier exists but bench/browser.py has no measurement yet"
    return {
        "status": status,
        "concurrency": concurrency,
        "pages": len(urls),
        "playwright_new_context_pages_per_s": None,
        "playwright_reused_context_pages_per_s": None,
        "browser_tier_pages_per_s": None,
    }
