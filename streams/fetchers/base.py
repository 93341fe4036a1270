"""The one interface every tier implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class FetchRequest:
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    max_body_bytes: int | None = None
    egress_pool: str | None = None  # pool named by the job (None: the tier's default)
    session_id: str | None = None  # sticky egress (and browser profile) per session
    proxy: str | None = None  # set by EgressFetcher: proxy URL with credentials; never logged


@dataclass(frozen=True, slots=True)
class FetchResponse:
    """What a tier got: the final response after redirects, body decoded (not charset-decoded)."""

    url: str
    final_url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    content_type: str | None
    wire_bytes: int
    redirects: int = 0
    egress_pool: str | None = None  # set by EgressFetcher: the pool it went through


class Fetcher(Protocol):
    """Fetch one URL. Raises :class:`streams.errors.FetchError` subclasses only.

    HTTP error statuses are responses, not errors: classification is the caller's pure policy.
    Implementations are async context managers: ``async with HttpFetcher(...) as f``.
    """

    async def fetch(self, request: FetchRequest) -> FetchResponse: ...
