"""Parsing a page once, bounded, and the small helpers every format shares."""

from __future__ import annotations

import re
from enum import Enum
from typing import Final
from urllib.parse import urldefrag, urljoin

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

# libxml2's default depth limit (256) stays on: no huge_tree, so 10k nested <div> cost nothing.
_PARSER: Final = HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True)
_SPACE: Final = re.compile(r"\s+")
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


def parse_html(text: str) -> HtmlElement:
    """The document's root element (always an ``<html>``, even for an empty or broken page)."""
    data = text.encode("utf-8", "replace")
    if len(data) > MAX_INPUT_BYTES:
        data = data[:MAX_INPUT_BYTES].decode("utf-8", "ignore").encode("utf-8")
    try:
        if data.strip():
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
    for href in root.xpath("//base/@href")[:1]:
        joined = absolute_url(url, str(href))
        if joined:
            return joined
    return url


def absolute_url(base: str, href: str) -> str | None:
    """``href`` against ``base``, without its fragment; None if it is not a usable http(s) URL."""
    href = href.strip()
    if not href or len(href) > 8192:
        return None
    try:
        joined = urldefrag(urljoin(base, href)).url
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    if not joined.startswith(("http://", "https://")) or len(joined) <= len("https://"):
        return None
    return joined
