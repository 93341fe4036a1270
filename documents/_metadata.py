"""The page's metadata: title, description, canonical URL, language, Open Graph, Twitter cards
and JSON-LD, with the response's own facts."""

from __future__ import annotations

import json
from collections.abc import Mapping

from lxml.html import HtmlElement

from documents._tree import absolute_url, normalise_space
from schemas.text import storable, storable_map

__all__ = ["metadata", "response_metadata"]

# A JSON-LD block larger than this is not parsed (bounds time on hostile pages).
MAX_JSON_LD_CHARS = 1024 * 1024


def response_metadata(
    *, status: int, content_type: str | None, url: str, headers: Mapping[str, str], charset: str
) -> dict[str, object]:
    """The facts every document has, HTML or not (all the metadata of a non-HTML body)."""
    return {
        "title": None,
        "description": None,
        "canonical": None,
        "language": _content_language(headers),
        "open_graph": {},
        "twitter": {},
        "json_ld": [],
        "status": status,
        "content_type": content_type,
        "final_url": url,
        "headers": storable_map(headers),
        "charset": charset,
    }


def _content_language(headers: Mapping[str, str]) -> str | None:
    for name, value in headers.items():
        if name.lower() == "content-language":
            first = value.split(",", 1)[0].strip()
            return storable(first) or None
    return None


def _add(into: dict[str, object], key: str, value: str) -> None:
    """A repeated property (several og:image) becomes a list of its values, in order."""
    old = into.get(key)
    if old is None:
        into[key] = value
    elif isinstance(old, list):
        old.append(value)
    else:
        into[key] = [old, value]


def metadata(root: HtmlElement, base: str, facts: dict[str, object]) -> dict[str, object]:
    """``facts`` (from :func:`response_metadata`) completed from the page's ``<head>``.

    ``title``: the ``<title>``; ``description``: ``<meta name=description>`` else
    ``og:description``; ``canonical``: ``<link rel=canonical>`` made absolute; ``language``:
    ``<html lang>`` else the Content-Language header; ``open_graph`` / ``twitter``: the
    ``og:*`` / ``twitter:*`` meta properties (a repeated one as a list); ``json_ld``: every
    ``application/ld+json`` block that parses (a top-level array contributes its items).
    """
    meta = dict(facts)
    title = root.find(".//title")
    if title is not None:
        meta["title"] = normalise_space(title.text_content()) or None
    lang = normalise_space(root.get("lang") or "")
    if lang:
        meta["language"] = lang
    open_graph: dict[str, object] = {}
    twitter: dict[str, object] = {}
    description = None
    for el in root.iter("meta"):
        content = el.get("content")
        if content is None:
            continue
        content = normalise_space(content)
        key = (el.get("property") or el.get("name") or "").strip().lower()
        if key == "description" and description is None:
            description = content
        elif key.startswith("og:") and len(key) > 3:
            _add(open_graph, key[3:], content)
        elif key.startswith("twitter:") and len(key) > 8:
            _add(twitter, key[8:], content)
    meta["description"] = description or open_graph.get("description") or None
    meta["open_graph"] = open_graph
    meta["twitter"] = twitter
    for link in root.iter("link"):
        if "canonical" in (link.get("rel") or "").lower().split() and link.get("href"):
            meta["canonical"] = absolute_url(base, link.get("href") or "")
            break
    meta["json_ld"] = _json_ld(root)
    return meta


def _json_ld(root: HtmlElement) -> list[object]:
    found: list[object] = []
    for script in root.iter("script"):
        if (script.get("type") or "").split(";")[0].strip().lower() != "application/ld+json":
            continue
        text = script.text or ""
        if not text.strip() or len(text) > MAX_JSON_LD_CHARS:
            continue
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            continue  # invalid JSON-LD is common; it is skipped, not an error
        if isinstance(value, list):
            found.extend(value)
        else:
            found.append(value)
    return found


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python accepts them, JSON not
