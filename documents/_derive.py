"""derive(): every requested format of one fetched page, from one parse."""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable, Collection, Mapping

from lxml.html import HtmlElement

from documents._content import main_content, strip_boilerplate, strip_scripts
from documents._decode import decode_html
from documents._extract import apply_rules
from documents._links import links
from documents._metadata import metadata, response_metadata
from documents._render import to_clean_html, to_markdown, to_text
from documents._tree import MAX_INPUT_BYTES, Kind, base_url, classify, parse_html
from schemas.extract import ExtractRule
from schemas.formats import DERIVED_FORMATS, Format

__all__ = ["derive"]

log = logging.getLogger(__name__)

_JSON_FORMATS = frozenset({Format.LINKS, Format.METADATA, Format.EXTRACT})
_CONTENT_FORMATS = (Format.CLEAN_HTML, Format.TEXT, Format.MARKDOWN)
# What a format is when the page gives nothing (or deriving it failed).
_EMPTY: dict[Format, bytes] = {
    Format.CLEAN_HTML: b"",
    Format.TEXT: b"",
    Format.MARKDOWN: b"",
    Format.LINKS: b"[]",
    Format.METADATA: b"{}",
    Format.EXTRACT: b"{}",
}


def _encode(value: object) -> bytes:
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", "replace")  # a lone surrogate (from JSON-LD) becomes '?'


def _safely(fmt: Format, make: Callable[[], object], out: dict[str, bytes]) -> None:
    try:
        out[fmt.value] = _encode(make())
    except Exception:  # a library's bug on one hostile page must not fail the fetch
        log.debug("deriving %s failed; an empty document instead", fmt.value, exc_info=True)
        out[fmt.value] = _EMPTY[fmt]


def derive(
    body: bytes,
    *,
    content_type: str | None,
    url: str,
    status: int,
    headers: Mapping[str, str],
    formats: Collection[str],
    only_main_content: bool = True,
    extract: Mapping[str, ExtractRule] | None = None,
) -> dict[str, bytes]:
    """Each requested derived format (``schemas.formats.DERIVED_FORMATS``) of a fetched page,
    as UTF-8 bytes (links, metadata and extract as compact JSON). Other formats in
    ``formats`` (html, raw, screenshot) are ignored.

    ``url`` is the final URL (the base for relative links, unless the page has ``<base>``).
    ``only_main_content`` applies to clean_html, text and markdown: False keeps the whole page
    minus scripts and styles. Reads at most the first 5 MiB of ``body``. Never raises: a format
    that cannot be derived is an empty document of its kind.
    """
    wanted = [f for f in DERIVED_FORMATS if f.value in formats]
    if not wanted:
        return {}
    out: dict[str, bytes] = {}
    try:
        text, charset = decode_html(body[:MAX_INPUT_BYTES], content_type)
        text = text.replace("\x00", "")
        kind = classify(content_type, text[:1024])
    except Exception:
        log.debug("decoding the body failed; deriving from nothing", exc_info=True)
        text, charset, kind = "", "utf-8", Kind.OTHER
    facts = response_metadata(
        status=status, content_type=content_type, url=url, headers=headers, charset=charset
    )
    if kind is not Kind.HTML:
        readable = text if kind is Kind.TEXT else ""
        plain = {
            Format.TEXT: lambda: readable,
            Format.MARKDOWN: lambda: readable,
            Format.CLEAN_HTML: lambda: f"<pre>{html.escape(readable)}</pre>" if readable else "",
            Format.LINKS: lambda: [],
            Format.METADATA: lambda: facts,
            Format.EXTRACT: lambda: {
                name: [] if r.all else None for name, r in (extract or {}).items()
            },
        }
        for fmt in wanted:
            _safely(fmt, plain[fmt], out)
        return out
    try:
        root = parse_html(text)
        base = base_url(root, url)
    except Exception:
        log.debug("parsing the page failed", exc_info=True)
        root, base = parse_html(""), url
    # Formats that read the page as it was, before the content formats change the tree.
    if Format.LINKS in wanted:
        _safely(Format.LINKS, lambda: links(root, base), out)
    if Format.METADATA in wanted:
        _safely(Format.METADATA, lambda: metadata(root, base, facts), out)
    if Format.EXTRACT in wanted:
        _safely(Format.EXTRACT, lambda: apply_rules(root, extract or {}, base), out)
    content = [f for f in _CONTENT_FORMATS if f in wanted]
    if content:
        _content_formats(root, base, content, only_main_content, out)
    return out


def _content_formats(
    root: HtmlElement, base: str, wanted: list[Format], only_main: bool, out: dict[str, bytes]
) -> None:
    element: HtmlElement = root
    try:
        strip_scripts(root)
        if only_main:
            strip_boilerplate(root)
            element = main_content(root)
        else:
            body = root.find("body")
            element = body if body is not None else root
    except Exception:
        log.debug("finding the main content failed; using the page", exc_info=True)
    # clean_html last: it rewrites attributes that markdown reads (code language classes).
    if Format.MARKDOWN in wanted:
        _safely(Format.MARKDOWN, lambda: to_markdown(element, base), out)
    if Format.TEXT in wanted:
        _safely(Format.TEXT, lambda: to_text(element), out)
    if Format.CLEAN_HTML in wanted:
        _safely(Format.CLEAN_HTML, lambda: to_clean_html(element, base), out)
