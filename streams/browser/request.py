"""What a browser tier is asked and what it answers: :class:`BrowserRequest`,
:class:`BrowserResponse`. No Playwright here; the option sets come from ``schemas.options``."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.options import (
    RESOURCE_TYPES,
    SCREENSHOT_MODES,
    WAIT_UNTIL,
    ResourceType,
    ScreenshotMode,
    WaitUntil,
)
from streams.fetchers.base import FetchRequest, FetchResponse

__all__ = ["BrowserRequest", "BrowserResponse"]

_WAIT_UNTIL: frozenset[str] = frozenset(WAIT_UNTIL)
_SCREENSHOT: frozenset[str] = frozenset(SCREENSHOT_MODES)
_RESOURCE_TYPES: frozenset[str] = frozenset(RESOURCE_TYPES)


@dataclass(frozen=True, slots=True)
class BrowserRequest(FetchRequest):
    """A :class:`FetchRequest` with the browser options.

    ``wait_for`` is a CSS selector waited for (attached to the DOM) after ``wait_until``;
    ``block_resources`` are resource types aborted before they are requested;
    ``session_id`` (with ``tenant``) selects the persistent profile of the stealth tier.
    """

    wait_until: WaitUntil = "load"
    wait_for: str | None = None
    screenshot: ScreenshotMode | None = None
    block_resources: frozenset[ResourceType] = frozenset()
    tenant: str | None = None
    session_id: str | None = None

    def __post_init__(self) -> None:
        if self.wait_until not in _WAIT_UNTIL:
            raise ValueError(f"wait_until must be one of {sorted(_WAIT_UNTIL)}")
        if self.screenshot is not None and self.screenshot not in _SCREENSHOT:
            raise ValueError(f"screenshot must be None or one of {sorted(_SCREENSHOT)}")
        blocked = frozenset(self.block_resources)
        unknown = blocked - _RESOURCE_TYPES
        if unknown:
            raise ValueError(
                f"cannot block {sorted(unknown)}; block_resources takes {sorted(_RESOURCE_TYPES)}"
            )
        object.__setattr__(self, "block_resources", blocked)
        if self.session_id is not None and not self.tenant:
            raise ValueError("a session_id needs a tenant")

    @classmethod
    def of(cls, request: FetchRequest) -> BrowserRequest:
        """The browser request for a plain fetch request (default browser options). Its
        egress proxy is kept; its ``session_id`` is not: without a tenant it names no browser
        profile (it only pinned the egress proxy, which is already chosen)."""
        if isinstance(request, BrowserRequest):
            return request
        return cls(
            url=request.url,
            headers=request.headers,
            timeout_s=request.timeout_s,
            max_body_bytes=request.max_body_bytes,
            egress_pool=request.egress_pool,
            proxy=request.proxy,
        )


@dataclass(frozen=True, slots=True)
class BrowserResponse(FetchResponse):
    """A :class:`FetchResponse` whose body is the rendered HTML, plus the screenshot (PNG)."""

    screenshot: bytes | None = None
