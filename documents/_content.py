"""Which part of a page is its content: boilerplate removal and the choice of the main element.

Cheap by design (one or two passes over the tree, no per-node scoring): the semantic markup
most sites have (``<main>``, ``<article>``, ``<nav>``, ARIA roles) decides, and class/id names
that say "navigation", "cookie banner", "sidebar"... remove the rest. These functions change
the tree: the caller runs them after every format that reads the page as it was.
"""

from __future__ import annotations

import re
from typing import Final, cast

from lxml import etree
from lxml.html import HtmlElement

__all__ = ["main_content", "strip_boilerplate", "strip_scripts"]

# Never content, and never shown as text by a browser (whole-page mode removes these only).
_SCRIPT_TAGS: Final = ("script", "style", "noscript", "template", "link", "meta")
# Page furniture, forms and embedded objects: not part of the main content.
_BOILERPLATE_TAGS: Final = (
    "nav", "aside", "form", "iframe", "frame", "dialog", "button", "input", "select",
    "textarea", "svg", "canvas", "object", "embed", "menu", "video", "audio",
)  # fmt: skip
_BOILERPLATE_ROLES: Final = frozenset(
    {"navigation", "complementary", "search", "dialog", "alertdialog", "menu", "menubar"}
)
_PAGE_ROLES: Final = frozenset({"banner", "contentinfo"})  # a page's header and footer
_HIDDEN_STYLE: Final = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_UNLIKELY: Final = re.compile(
    r"cookie|consent|gdpr|banner|sidebar|side-bar|breadcrumb|share|sharing|social|newsletter"
    r"|subscribe|related|recommend|advert|(?:^|[\s_-])ads?(?:$|[\s_-])|promo|popup|modal"
    r"|skip-link|menu|navbar|masthead|footer|header|comment|disqus|pagination|pager|widget"
    r"|sponsor|toolbar|signup|login",
    re.I,
)
_LIKELY: Final = re.compile(r"article|content|main|body|post|entry|story|text|page|hentry", re.I)
_KEEP_TAGS: Final = frozenset({"html", "body", "main", "article", "h1", "h2", "h3"})
# Compiled once: compiling an XPath costs more than running it on most pages.
_MAIN: Final = etree.XPath("//main|//*[@role='main']")
_ARTICLES: Final = etree.XPath("//article")


def _drop(elements: list[HtmlElement]) -> None:
    for el in elements:
        parent = el.getparent()
        if parent is not None:
            el.drop_tree()  # keeps its tail text in place


def strip_scripts(root: HtmlElement) -> None:
    """Remove what a browser never shows as text: script, style, noscript, template."""
    _drop(list(root.iter(*_SCRIPT_TAGS)))


def _in_content(el: HtmlElement) -> bool:
    """Inside an <article> or <main>: a <header>/<footer> there is the article's own."""
    return any(a.tag in ("article", "main") for a in el.iterancestors())


def _is_boilerplate(el: HtmlElement) -> bool:
    if not isinstance(el.tag, str) or el.tag in _KEEP_TAGS:
        return False
    attrib = el.attrib
    role = attrib.get("role", "").strip().lower()
    if role in _BOILERPLATE_ROLES or (role in _PAGE_ROLES and not _in_content(el)):
        return True
    if "hidden" in attrib or attrib.get("aria-hidden", "").strip().lower() == "true":
        return True
    if "style" in attrib and _HIDDEN_STYLE.search(attrib["style"]):
        return True
    names = f"{attrib.get('class', '')} {attrib.get('id', '')}"
    return bool(names.strip() and _UNLIKELY.search(names) and not _LIKELY.search(names))


def strip_boilerplate(root: HtmlElement) -> None:
    """Remove navigation, page header/footer, sidebars, banners, forms and hidden elements."""
    doomed: list[HtmlElement] = list(root.iter(*_BOILERPLATE_TAGS))
    for el in root.iter("header", "footer"):
        if not _in_content(el):
            doomed.append(el)
    doomed.extend(el for el in root.iter() if _is_boilerplate(el))
    _drop(doomed)


def _text_length(el: HtmlElement) -> int:
    return len("".join(el.itertext()).split())


def main_content(root: HtmlElement) -> HtmlElement:
    """The element holding the page's main content, after :func:`strip_boilerplate`: the one
    ``<main>`` (or ``role=main``) or the one ``<article>`` if it holds at least a quarter of the
    page's words, else the ``<body>``."""
    body = root.find("body")
    if body is None:
        return root
    candidates = cast(list[HtmlElement], _MAIN(root))
    if not candidates:
        candidates = cast(list[HtmlElement], _ARTICLES(root))
        if len(candidates) != 1:  # none, or a listing of several: the page is the content
            return body
    best = max(candidates, key=_text_length)
    words = _text_length(best)
    return best if words and words * 4 >= _text_length(body) else body
