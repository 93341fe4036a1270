"""The result cache as the tier workers see it: a port, implemented outside ``streams``.

A job with ``options.max_age_s`` may be answered from an earlier successful fetch of the same
page (``schemas.cache.cache_key``) made at its tier or above, without fetching. Where fetches
are remembered (PostgreSQL rows and stored pages) is the connectors' business; the composition
root hands the worker an implementation of :class:`FetchCache` (``connectors.cache``), so
``streams`` never imports ``connectors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from schemas.cache import CachedFetch
from streams.fetchers.base import FetchResponse

__all__ = ["CachedResponse", "FetchCache", "cached_response"]


class FetchCache(Protocol):
    async def lookup(
        self,
        *,
        tenant: str,
        key: str,
        max_age_s: int,
        tiers: Sequence[str],
        shared: bool,
    ) -> CachedFetch | None:
        """The newest successful fetch under ``key`` at most ``max_age_s`` old, made by one of
        ``tiers``: ``tenant``'s own, or any tenant's when ``shared``. None on a miss; raises
        only :class:`schemas.cache.CacheUnavailable` (the worker then fetches)."""
        ...


@dataclass(frozen=True, slots=True)
class CachedResponse(FetchResponse):
    """A cached fetch in the shape of a fetcher's response, so the rest of the attempt (formats,
    the result record) is the same code as for a fresh fetch."""

    job_id: str = ""  # the job whose fetch this was
    screenshot: bytes | None = None


def cached_response(hit: CachedFetch) -> CachedResponse:
    return CachedResponse(
        url=hit.url,
        final_url=hit.final_url,
        status=hit.status,
        headers=hit.headers,
        body=hit.body,
        content_type=hit.content_type,
        wire_bytes=0,  # nothing crossed the network
        job_id=hit.job_id,
        screenshot=hit.screenshot,
    )
