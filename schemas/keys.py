"""Message keys and ids shared by every producer.

Tier topics are keyed by registrable domain (eTLD+1) so that one worker owns a site's
politeness state. The Public Suffix List snapshot bundled with tldextract is used; nothing is
fetched at run time.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from functools import cache, lru_cache
from urllib.parse import urlsplit

import tldextract

_NS = uuid.UUID("8d0c7e8a-3a57-4b53-9b7e-5c1f0c2a9e11")
_NS_BYTES = _NS.bytes


@cache
def _extractor() -> tldextract.TLDExtract:
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def site_key(url: str) -> str:
    """Registrable domain of ``url`` (``a.b.example.co.uk`` → ``example.co.uk``).

    IP literals and single-label hosts are their own site. Lower-case, no port. A string that
    is no URL at all (``http://[::1``) has the empty site: keying must never fail, the job
    is refused later with ``invalid_url``.
    """
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return _site_of_host(host.rstrip(".").lower())


@lru_cache(maxsize=65536)
def _site_of_host(host: str) -> str:
    """Memoised: a worker sees the same few hosts again and again, and the Public Suffix List
    lookup is ~15 us per call."""
    if not host:
        return ""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    ext = _extractor()(host)
    return ext.top_domain_under_public_suffix or host


def derived_id(*parts: str) -> str:
    """A deterministic event id: the same inputs always give the same id (idempotent sinks)."""
    # uuid.uuid5 computed directly (same value; ~3x cheaper than building a UUID object, and
    # the worker derives three ids per job).
    digest = bytearray(hashlib.sha1(_NS_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def content_object_key(tenant: str, job_id: str) -> str:
    """Where a job's content lives in object storage. Deterministic: rewrites are idempotent."""
    return f"content/{tenant}/{job_id[:2]}/{job_id}.html.gz"


def screenshot_object_key(tenant: str, job_id: str) -> str:
    """Where a job's screenshot (PNG) lives in object storage. Deterministic, like the content."""
    return f"screenshots/{tenant}/{job_id[:2]}/{job_id}.png"


def document_object_key(tenant: str, job_id: str, fmt: str) -> str:
    """Where a job's derived format (markdown, links…) lives in object storage. Deterministic."""
    return f"documents/{tenant}/{job_id[:2]}/{job_id}.{fmt}.gz"
