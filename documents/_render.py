"""The content element to clean HTML, text and Markdown."""

from __future__ import annotations

import re
from typing import Final

import html_to_markdown
from lxml import etree
from lxml.html import HtmlElement

from documents._tree import absolute_url, normalise_space

__all__ = ["to_clean_html", "to_markdown", "to_text"]

_MARKDOWN_OPTIONS_CACHE: dict[str, html_to_markdown.ConversionOptions] = {}
# Our own boilerplate removal decides what is content; the converter's would differ by mode.
_NO_PREPROCESSING: Final = html_to_markdown.PreprocessingOptions(
    enabled=False, preset=html_to_markdown.PreprocessingPreset.MINIMAL
)
# Every enum option given as the enum, not its default string: html-to-markdown converts
# string options on each call, which cost as much as converting a 20 KB page.
_ENUM_OPTIONS: Final[dict[str, object]] = {
    "heading_style": html_to_markdown.HeadingStyle.ATX,
    "list_indent_type": html_to_markdown.ListIndentType.SPACES,
    "highlight_style": html_to_markdown.HighlightStyle.DOUBLE_EQUAL,
    "whitespace_mode": html_to_markdown.WhitespaceMode.NORMALIZED,
    "newline_style": html_to_markdown.NewlineStyle.SPACES,
    "code_block_style": html_to_markdown.CodeBlockStyle.BACKTICKS,
    "inline_data_media": html_to_markdown.InlineDataMedia.KEEP,
    "hidden_content": html_to_markdown.HiddenContent.DROP,
    "url_escape_style": html_to_markdown.UrlEscapeStyle.ANGLE,
    "link_style": html_to_markdown.LinkStyle.INLINE,
    "output_format": html_to_markdown.OutputFormat.MARKDOWN,
    # The single-pass scanner: ~0.19 ms against ~0.35 ms for a bench page (30 KB), and the
    # same Markdown on every page of tests/corpus. It hands what it cannot convert (CDATA, an
    # unescaped '<', SVG...) to the tree converter that AUTO would have chosen for our options
    # (AUTO never picks the scanner with preprocessing off). They differ on markup lxml does
    # not repair, a block inside an inline element (the scanner breaks the line, which is right
    # in Markdown), and on leading tabs (the scanner drops them).
    "tier_strategy": html_to_markdown.TierStrategy.TIER1,
}

# Blocks separated by a blank line, and lines separated by a newline, in the text format.
_PARAGRAPHS: Final = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "aside", "nav",
        "blockquote", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl",
        "table", "figure", "figcaption", "address", "details", "summary", "hr", "body",
        "fieldset", "form", "caption",
    }
)  # fmt: skip
_LINES: Final = frozenset({"li", "tr", "dt", "dd", "option"})
_CELLS: Final = frozenset({"td", "th"})
_LISTS: Final = frozenset({"ul", "ol", "dl"})
_CELL_MARK: Final = "\x01"
_BR_MARK: Final = "\x02"
_MARKS: Final = re.compile(f"[ ]*([{_CELL_MARK}{_BR_MARK}])[ ]*")

# Attributes clean HTML keeps; everything else (class, style, on*, data-*) goes.
_KEPT_ATTRIBUTES: Final = frozenset(
    {
        "href", "src", "alt", "title", "colspan", "rowspan", "start", "reversed", "datetime",
        "cite", "lang", "dir", "scope", "abbr", "value", "type",
    }
)  # fmt: skip
_URL_ATTRIBUTES: Final = ("href", "src", "cite")


def to_markdown(el: HtmlElement, base: str) -> str:
    """Markdown of ``el`` (headings, nested lists, tables, code, links and images made
    absolute against ``base``) by html-to-markdown, a Rust converter (bench/results/
    markdown_candidates.md)."""
    options = _MARKDOWN_OPTIONS_CACHE.get(base)
    if options is None:
        if len(_MARKDOWN_OPTIONS_CACHE) > 256:
            _MARKDOWN_OPTIONS_CACHE.clear()
        options = html_to_markdown.ConversionOptions(
            extract_metadata=False,
            preprocessing=_NO_PREPROCESSING,
            base_url=base,
            max_depth=512,
            bullets="-",
            **_ENUM_OPTIONS,  # type: ignore[arg-type]
        )
        _MARKDOWN_OPTIONS_CACHE[base] = options
    html = etree.tostring(el, method="html", encoding="unicode", with_tail=False)
    markdown = (html_to_markdown.convert(html, options).content or "").strip()
    return markdown + "\n" if markdown else ""


def to_text(el: HtmlElement) -> str:
    """The readable text of ``el``: blocks separated by a blank line, list items and table
    rows one a line, table cells by a tab, whitespace within a line collapsed."""
    out: list[str] = []  # separators and blocks, alternating
    buf: list[str] = []
    pending = ""  # the strongest break asked for since the last block
    lists = 0  # <ul>/<ol>/<dl> depth: a nested list is lines, not paragraphs

    def brk(sep: str) -> None:
        nonlocal pending
        if buf:
            joined = _MARKS.sub(r"\1", normalise_space("".join(buf)))
            lines = (ln.strip() for ln in joined.replace(_CELL_MARK, "\t").split(_BR_MARK))
            block = "\n".join(ln for ln in lines if ln)
            buf.clear()
            if block:
                out.append(pending if out else "")
                out.append(block)
                pending = ""
        if len(sep) > len(pending):
            pending = sep

    walker = etree.iterwalk(el, events=("start", "end"))
    for action, node in walker:
        tag = node.tag
        if not isinstance(tag, str):  # comments and processing instructions
            if action == "end" and node.tail:
                buf.append(node.tail)
            continue
        is_list = tag in _LISTS
        if action == "start" and tag == "pre":  # preformatted: kept as it is
            brk("\n\n")
            block = "".join(node.itertext()).strip("\n").rstrip()
            if block.strip():
                out.append(pending if out else "")
                out.append(block)
                pending = "\n\n"
            walker.skip_subtree()
        elif action == "start":
            lists += is_list
            if tag in _PARAGRAPHS and not (is_list and lists > 1):
                brk("\n\n")
            elif tag in _LINES or is_list:
                brk("\n")
            elif tag in _CELLS and buf:
                buf.append(_CELL_MARK)
            elif tag == "br":
                buf.append(_BR_MARK)
            if node.text:
                buf.append(node.text)
        else:
            if tag in _PARAGRAPHS and not (is_list and lists > 1):
                brk("\n\n")
            elif tag in _LINES or is_list:
                brk("\n")
            lists -= is_list
            if node is not el and node.tail:
                buf.append(node.tail)
    brk("")
    return "".join(out) + "\n" if out else ""


def to_clean_html(el: HtmlElement, base: str) -> str:
    """``el`` as HTML with only content attributes kept, links and sources made absolute
    (a link that is not http(s) loses its ``href``)."""
    for node in el.iter():
        if not isinstance(node.tag, str):
            continue
        attrib = node.attrib
        for name in [n for n in attrib if n not in _KEPT_ATTRIBUTES]:
            del attrib[name]
        for name in _URL_ATTRIBUTES:
            value = attrib.get(name)
            if value is not None:
                absolute = absolute_url(base, value)
                if absolute is None:
                    del attrib[name]
                else:
                    attrib[name] = absolute
    return etree.tostring(el, method="html", encoding="unicode", with_tail=False)
