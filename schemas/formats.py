"""What a job can ask to get back (``options.formats``), defined once.

``html`` and ``raw`` are the fetched body itself (stored once, as today): ``raw`` is served as the
site sent it (its own content type), ``html`` transcoded to UTF-8. ``screenshot`` is the browser
tiers' PNG. Every other format is derived from the page by the worker that fetched it and stored
as an object of its own, named by :func:`document_object_key`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "BODY_FORMATS",
    "DEFAULT_FORMATS",
    "DERIVED_FORMATS",
    "MEDIA_TYPES",
    "Format",
]


class Format(StrEnum):
    HTML = "html"  # the fetched page, as text in UTF-8 (the default)
    RAW = "raw"  # the fetched bytes, as sent
    CLEAN_HTML = "clean_html"  # scripts, styles, navigation and other boilerplate removed
    TEXT = "text"  # the readable text
    MARKDOWN = "markdown"  # the main content (or the whole page) as Markdown
    LINKS = "links"  # absolute, deduplicated links with anchor text and rel (JSON)
    METADATA = "metadata"  # title, description, canonical, language, OG, Twitter, JSON-LD (JSON)
    EXTRACT = "extract"  # the job's extraction rules applied (JSON); implied by options.extract
    SCREENSHOT = "screenshot"  # browser tiers: a PNG


DEFAULT_FORMATS: Final[tuple[Format, ...]] = (Format.HTML,)
# Served from the stored body: no object of their own.
BODY_FORMATS: Final = frozenset({Format.HTML, Format.RAW})
# Derived from the page by the worker, each stored as its own object.
DERIVED_FORMATS: Final[tuple[Format, ...]] = (
    Format.CLEAN_HTML,
    Format.TEXT,
    Format.MARKDOWN,
    Format.LINKS,
    Format.METADATA,
    Format.EXTRACT,
)

MEDIA_TYPES: Final[dict[Format, str]] = {
    Format.HTML: "text/html; charset=utf-8",
    Format.CLEAN_HTML: "text/html; charset=utf-8",
    Format.TEXT: "text/plain; charset=utf-8",
    Format.MARKDOWN: "text/markdown; charset=utf-8",
    Format.LINKS: "application/json",
    Format.METADATA: "application/json",
    Format.EXTRACT: "application/json",
    Format.SCREENSHOT: "image/png",
    # Format.RAW: the page's own Content-Type
}
