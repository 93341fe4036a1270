"""Is a page an empty shell that only JavaScript fills in?"""

from __future__ import annotations

import re
from typing import Final

from lxml import etree
from lxml.html import HtmlElement

from documents._tree import parse_html

__all__ = ["APP_ROOT_IDS", "looks_like_js_shell"]

# The ids single-page-app frameworks mount into (React, Vue, Next.js, Gatsby, Svelte).
APP_ROOT_IDS: Final = frozenset({"root", "app", "__next", "___gatsby", "svelte"})
_INVISIBLE: Final = frozenset({"script", "style", "noscript", "template", "head", "title"})
_ENABLE_JS: Final = re.compile(
    r"(?:enable|turn\s+on|activate|allow)\s+javascript"
    r"|javascript\s+(?:is\s+)?(?:required|disabled|needed|must\s+be\s+enabled)"
    r"|(?:requires?|needs?)\s+javascript",
    re.IGNORECASE,
)


def _visible_text(root: HtmlElement) -> str:
    """The text a browser shows before any script runs (script, style, noscript and template
    content are not shown)."""
    parts: list[str] = []
    skipping = 0
    for action, node in etree.iterwalk(root, events=("start", "end")):
        tag = node.tag if isinstance(node.tag, str) else ""
        if action == "start":
            if tag in _INVISIBLE:
                skipping += 1
            elif not skipping and node.text:
                parts.append(node.text)
        else:
            if tag in _INVISIBLE:
                skipping -= 1
            if not skipping and node is not root and node.tail:
                parts.append(node.tail)
    return " ".join("".join(parts).split())


def _has_empty_app_root(root: HtmlElement) -> bool:
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        element_id = (el.get("id") or "").strip().lower()
        if element_id in APP_ROOT_IDS and not _visible_text(el):
            return True  # empty, whitespace, or only a spinner without text
    return False


def looks_like_js_shell(html_text: str, min_text_chars: int = 200) -> bool:
    """True when the page shows fewer than ``min_text_chars`` characters of text and either
    mounts an app into an empty ``#root``/``#app``/``#__next``/``#___gatsby``/``#svelte``
    element, or asks the reader to enable JavaScript (in a ``<noscript>`` or in its text).

    The page is parsed, so the markup's spelling does not matter (``<DIV ID=root>``,
    ``<div id = 'app' >``, attributes in any order)."""
    root = parse_html(html_text)
    visible = _visible_text(root)
    if len(visible) >= min_text_chars:
        return False
    if _has_empty_app_root(root):
        return True
    if _ENABLE_JS.search(visible):
        return True
    return any(_ENABLE_JS.search(ns.text_content()) for ns in root.iter("noscript"))
