"""The result cache's identity of a fetch: which earlier fetch may answer a job.

Two jobs share a cache key when they would fetch the same thing: the same URL once normalised
(:func:`cache_url`) and the same options that change what comes back from the site (headers,
the browser's waiting and blocked resources, the session, the egress pool, the screenshot).
Options that only change what is made of the page (formats, extraction rules) are not part of
it: the cache keeps the page as fetched, so a hit can serve formats the first job never asked
for. The tier is not part of the key either; a cached fetch answers a job only if it was made
at the job's starting tier or above (:data:`schemas.topics.TIER_ORDER`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from schemas.records import FetchOptions
from schemas.urls import validate_url

__all__ = [
    "MAX_AGE_S",
    "CacheUnavailable",
    "CachedFetch",
    "cache_key",
    "cache_url",
    "same_url",
    "shareable",
]

MAX_AGE_S: Final = 30 * 24 * 3600  # the largest options.max_age_s: 30 days
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
# RFC 3986 §2.3: percent-encoding these never changes a URL's meaning.
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def cache_url(url: str) -> str:
    """``url`` normalised for the cache: lower-case scheme and host, the host in IDNA (or the
    canonical IP), no default port, no fragment, an empty path as ``/``, percent-encoding of
    unreserved characters decoded and the rest in upper-case hex, query parameters sorted by
    name (stable: repeated names keep their order). Raises :class:`schemas.urls.InvalidURL`
    for a URL that is not fetchable."""
    parts = urlsplit(validate_url(url))
    netloc = parts.netloc
    if parts.port is not None and parts.port == _DEFAULT_PORTS.get(parts.scheme):
        netloc = netloc.rsplit(":", 1)[0]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(sorted(pairs, key=lambda kv: kv[0]), quote_via=quote, safe="-._~")
    return urlunsplit((parts.scheme, netloc, _path(parts.path), query, ""))


def _path(path: str) -> str:
    def fix(m: re.Match[str]) -> str:
        char = chr(int(m.group(0)[1:], 16))
        return char if char in _UNRESERVED else m.group(0).upper()

    return _PERCENT.sub(fix, path) or "/"


def cache_key(url: str, options: FetchOptions) -> str:
    """The hex SHA-256 naming a fetch of ``url`` with ``options`` (see the module doc)."""
    o = options
    if (
        o.headers
        or o.wait_until
        or o.wait_for
        or o.block_resources
        or o.screenshot
        or o.session_id
        or o.egress_pool
    ):
        fetch = json.dumps(
            [
                sorted((k.lower(), v) for k, v in o.headers.items()),
                o.wait_until,
                o.wait_for,
                sorted(o.block_resources),
                o.screenshot,
                o.session_id,
                o.egress_pool,
            ],
            separators=(",", ":"),
            ensure_ascii=False,
        )
    else:
        fetch = ""  # most jobs: no option that changes the fetch
    blob = f"{cache_url(url)}\n{fetch}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(blob).hexdigest()


def shareable(options: FetchOptions) -> bool:
    """Whether a fetch with ``options`` may answer another tenant's job when the deployment
    shares public fetches: no request headers (they may carry credentials) and no session."""
    return not options.headers and not options.session_id


def same_url(a: str, b: str) -> bool:
    """Whether two URLs name the same page for the cache (tests and tools)."""
    return cache_url(a) == cache_url(b)


@dataclass(frozen=True, slots=True)
class CachedFetch:
    """An earlier successful fetch, as the cache returns it to a worker."""

    job_id: str  # the job whose fetch this was
    tier: str
    url: str
    final_url: str
    status: int
    content_type: str | None
    body: bytes  # the page as fetched (decoded of its Content-Encoding)
    headers: dict[str, str] = field(default_factory=dict)
    screenshot: bytes | None = None


class CacheUnavailable(Exception):
    """The cache could not be asked (database or object store down, or too slow): fetch."""
