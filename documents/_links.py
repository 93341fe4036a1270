"""The page's links: absolute, deduplicated, in document order."""

from __future__ import annotations

from typing import cast

from lxml import etree
from lxml.html import HtmlElement

from documents._tree import absolute_url, normalise_space

__all__ = ["links"]

_IMAGE_ALTS = etree.XPath(".//img/@alt")


def links(root: HtmlElement, base: str) -> list[dict[str, object]]:
    """Every ``<a href>`` and ``<area href>`` as ``{"url", "text", "rel"}``.

    ``url`` is absolute (against ``base``, the ``<base href>`` already applied) and without its
    fragment; only http(s) links are kept (``mailto:``, ``javascript:``, ``tel:``... are not
    pages to fetch), and fragment-only links (``#top``) are dropped. A URL is listed once, at
    its first place, with the first non-empty anchor text (an ``<img>``'s alt text for an
    image link). ``rel`` is the lowercased, deduplicated list of rel tokens of that first link.
    """
    found: dict[str, dict[str, object]] = {}
    for a in root.iter("a", "area"):
        href = a.get("href")
        if href is None or href.lstrip().startswith("#"):
            continue
        url = absolute_url(base, href)
        if url is None:
            continue
        text = normalise_space("".join(a.itertext())) if a.tag == "a" else ""
        if not text:
            text = normalise_space(a.get("alt") or a.get("title") or "")
            if not text:
                for alt in cast(list[str], _IMAGE_ALTS(a))[:1]:
                    text = normalise_space(str(alt))
        entry = found.get(url)
        if entry is None:
            rel = list(dict.fromkeys((a.get("rel") or "").lower().split()))
            found[url] = {"url": url, "text": text, "rel": rel}
        elif not entry["text"] and text:
            entry["text"] = text
    return list(found.values())
