"""Parsing a page once, bounded, and the small helpers every format shares."""

from __future__ import annotations

import functools
import re
from enum import Enum
from typing import Final, cast
from urllib.parse import urldefrag, urljoin, urlsplit

from lxml import etree
from lxml.html import HtmlElement, HTMLParser, document_fromstring

__all__ = [
    "MAX_INPUT_BYTES",
    "Kind",
    "absolute_url",
    "base_url",
    "classify",
    "normalise_space",
    "parse_html",
]

# The most of a body any format reads: bounds parse time and tree memory on hostile pages.
MAX_INPUT_BYTES: Final = 5 * 1024 * 1024

# Tags longer than this with more than MAX_TAG_TOKENS attributes lose the rest (see
# _limit_attributes); a quoted value with that many spaces in one such tag is cut too.
LONG_TAG_CHARS: Final = 1024
MAX_TAG_TOKENS: Final = 256

# libxml2's default depth limit (256) stays on: no huge_tree, so 10k nested <div> cost nothing.
_PARSER: Final = HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)
_SPACE: Final = re.compile(r"\s+")
# Compiled once: compiling an XPath costs more than running it on most pages.
_BASE_HREFS: Final = etree.XPath("//base/@href")
# A '<' followed by LONG_TAG_CHARS characters that end no tag and start none: a long tag.
_LONG_TAG: Final = re.compile(f"<[^<>]{{{LONG_TAG_CHARS}}}")
_HTML_START: Final = re.compile(
    r"\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body|meta|title|div|p|a|script)\b",
    re.IGNORECASE | re.DOTALL,
)


class Kind(Enum):
    HTML = "html"
    TEXT = "text"  # text/plain, JSON, XML, CSS, JavaScript: the text is the document
    OTHER = "other"  # images, PDF, archives: nothing to derive but the metadata


_TEXT_TYPES: Final = ("application/json", "application/xml", "application/javascript")


def classify(content_type: str | None, text_start: str) -> Kind:
    """What the body is, from its media type; sniffed from its start when there is none."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in ("text/html", "application/xhtml+xml"):
        return Kind.HTML
    if not media:
        return Kind.HTML if _HTML_START.match(text_start) else Kind.TEXT
    if media.startswith("text/") or media in _TEXT_TYPES or media.endswith(("+json", "+xml")):
        return Kind.TEXT
    return Kind.OTHER


def _limit_attributes(text: str) -> str:
    """``text`` with every tag cut after :data:`MAX_TAG_TOKENS` attributes: libxml2 checks each
    attribute against all the previous ones of its tag, so an attribute flood is quadratic
    (100k attributes: 13 s). Only tags longer than :data:`LONG_TAG_CHARS` are looked at; one
    shorter has too few attributes to matter. C-speed for ordinary pages (one regex scan)."""
    if _LONG_TAG.search(text) is None:
        return text
    segments = text.split(">")
    for i, segment in enumerate(segments):
        if len(segment) > LONG_TAG_CHARS:
            start = segment.rfind("<")
            tag = segment[start:] if start >= 0 else ""
            if len(tag) > LONG_TAG_CHARS:
                tokens = tag.split(maxsplit=MAX_TAG_TOKENS + 1)
                if len(tokens) > MAX_TAG_TOKENS + 1:
                    cut = len(tag) - len(tokens[-1])
                    segments[i] = segment[:start] + tag[:cut]
    return ">".join(segments)


def parse_html(text: str) -> HtmlElement:
    """The document's root element (always an ``<html>``, even for an empty or broken page)."""
    data = _limit_attributes(text).encode("utf-8", "replace")
    if len(data) > MAX_INPUT_BYTES:
        data = data[:MAX_INPUT_BYTES].decode("utf-8", "ignore").encode("utf-8")
    try:
        if data and not data.isspace():  # no copy of the page, unlike strip()
            root = document_fromstring(data, parser=_PARSER)
            if isinstance(root, HtmlElement):
                return root
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        pass
    return document_fromstring(b"<html><body></body></html>", parser=_PARSER)


def normalise_space(text: str) -> str:
    """Runs of whitespace as one space, trimmed."""
    return _SPACE.sub(" ", text).strip()


def base_url(root: HtmlElement, url: str) -> str:
    """The base for the page's relative links: the first ``<base href>``, else the page URL."""
    for href in cast(list[str], _BASE_HREFS(root))[:1]:
        joined = absolute_url(url, str(href))
        if joined:
            return joined
    return url


@functools.lru_cache(maxsize=64)
def _origin(base: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) base URL, for the fast path of absolute_url."""
    try:
        parts = urlsplit(base)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def _plain(href: str) -> bool:
    """No characters urljoin would remove or dot segments it would resolve."""
    return href.isprintable() and " " not in href and "/." not in href and "\\" not in href


def absolute_url(base: str, href: str) -> str | None:
    """``href`` against ``base``, without its fragment; None if it is not a usable http(s) URL."""
    href = href.strip()
    if not href or len(href) > 8192:
        return None
    # Fast paths (most links on a page): already absolute, or absolute-path relative.
    if _plain(href):
        if href.startswith(("http://", "https://")) and len(href) > 8:
            return href.split("#", 1)[0]
        if href.startswith("/") and not href.startswith("//"):
            origin = _origin(base)
            if origin is not None:
                return origin + href.split("#", 1)[0]
    try:
        joined = urldefrag(urljoin(base, href)).url
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    scheme, colon, rest = joined.partition(":")
    joined = scheme.lower() + colon + rest  # urljoin keeps "HTTP:" as written
    if not joined.startswith(("http://", "https://")) or len(joined) <= len("https://"):
        return None
    return joined
