"""How the browser tiers run Chromium: the binary, its command-line flags, :class:`BrowserConfig`,
and the launch and context options derived from them.

Nothing here imports Playwright: the settings object (``scrapifie.settings``) holds a
:class:`BrowserConfig`, and every process builds settings, browser tier or not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BASE_ARGS",
    "FULL_CHROMIUM",
    "HEADLESS_SHELL",
    "PROXIED_ARGS",
    "BrowserConfig",
    "ProxySettings",
    "browser_proxy",
    "context_options",
    "launch_args",
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


class ProxySettings(TypedDict, total=False):
    """Playwright's proxy settings (``new_context(proxy=...)``)."""

    server: str
    bypass: str


def launch_args(cfg: BrowserConfig, proxy: ProxySettings | None) -> list[str]:
    """Chromium's command line for a browser launched for a job with (or without) a proxy."""
    return [*BASE_ARGS, *(PROXIED_ARGS if proxy is not None else ()), *cfg.extra_args]


def browser_proxy(proxy: ProxySettings | None) -> dict[str, Any]:
    """Browser-level proxy for a launch: a server and bypass rules. Per-context proxies work
    without it (Linux, Playwright 1.65, Chromium 156); it is there so that traffic outside our
    contexts also meets the guard proxy, whose shared port refuses it. A persistent profile's
    browser serves one job, so it gets that job's own proxy."""
    if proxy is None:
        return {}
    return {"proxy": {"server": proxy["server"], "bypass": proxy.get("bypass", "<-loopback>")}}


def context_options(
    config: BrowserConfig, user_agent: str, *, no_cache: bool = False
) -> dict[str, Any]:
    """Playwright's options for a new context (or a persistent profile's launch)."""
    options: dict[str, Any] = {
        "user_agent": user_agent,
        "service_workers": "block",  # they would fetch outside page.route
        "accept_downloads": False,
        "viewport": {
            "width": config.viewport_width,
            "height": config.viewport_height,
        },
    }
    if no_cache:
        # Chromium reads a request's no-cache as "fetch from the network": a kept context's
        # HTTP cache (a page the tenant fetched before) never stands in for a fetch.
        options["extra_http_headers"] = {"Cache-Control": "no-cache"}
    return options
