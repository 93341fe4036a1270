"""A job's extraction rules applied to the page (the ``extract`` format)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Final

from lxml import etree
from lxml.html import HtmlElement

from documents._tree import absolute_url, normalise_space
from schemas.extract import ExtractRule, css_to_xpath

__all__ = ["apply_rules", "parse_number"]

# Attributes whose value is a URL: returned absolute.
_URL_ATTRIBUTES: Final = frozenset({"href", "src", "action", "poster", "cite", "data-src"})
# A number: digits in groups of three separated by , . ' or a (narrow) no-break space or space,
# then an optional decimal part after , or . ("1,299.00", "1.299,00", "12,50", "1 299").
_NUMBER: Final = re.compile(
    r"(?<![\w.,])([-\u2212]?)(\d+)((?:[,.'\u00a0\u202f ]\d{3}(?!\d))*)(?:([.,])(\d+))?"
)
_MAX_DIGITS: Final = 30
_MAX_MATCHES: Final = 10_000  # per rule: bounds the output of "all" on a hostile page

Value = str | int | float | dict[str, object] | None


def parse_number(text: str) -> int | float | None:
    """The first number in ``text``: an int when it has no decimal part, else a float; None if
    there is none. Thousands separators are dropped; a lone separator followed by exactly three
    digits is a thousands separator ("1,299" and "1.299" are 1299) unless the integer part is 0
    ("0.125" is 0.125). Currency signs and words around it are ignored ("€ 12,50" is 12.5)."""
    m = _NUMBER.search(text)
    if m is None:
        return None
    sign, head, groups, point, decimals = m.groups()
    if head == "0" and groups and not point and len(groups) == 4:
        point, decimals, groups = groups[0], groups[1:], ""
    digits = head + re.sub(r"\D", "", groups)
    if len(digits) + len(decimals or "") > _MAX_DIGITS:
        return None
    negative = -1 if sign else 1
    if decimals is None:
        return negative * int(digits)
    return negative * float(f"{digits}.{decimals}")


@functools.lru_cache(maxsize=1024)
def _compiled(css: str | None, xpath: str | None, relative: bool) -> etree.XPath:
    if css is not None:
        return etree.XPath(css_to_xpath(css, relative=relative))
    return etree.XPath(xpath or "")


def _matches(rule: ExtractRule, context: HtmlElement, relative: bool) -> list[object]:
    try:
        result = _compiled(rule.css, rule.xpath, relative)(context)
    except (etree.XPathError, ValueError, TypeError):
        return []  # a valid XPath can still fail to evaluate (an unknown namespace prefix)
    if isinstance(result, list):
        return list(result[:_MAX_MATCHES])
    if isinstance(result, bool) or result is None:
        return [str(result).lower()] if isinstance(result, bool) else []
    return [result]  # a string or a number from count(), string()...


def _value(rule: ExtractRule, match: object, base: str) -> Value:
    if rule.fields is not None:
        if not isinstance(match, HtmlElement):
            return None
        return _fields(rule.fields, match, base, relative=True)
    if isinstance(match, HtmlElement):
        if rule.attr is not None:
            value: str | None = match.get(rule.attr)
            if value is None:
                return None
            if rule.attr.lower() in _URL_ATTRIBUTES:
                return absolute_url(base, value) or value.strip()
            return value.strip()
        if rule.type == "html":
            return str(etree.tostring(match, method="html", encoding="unicode", with_tail=False))
        text = normalise_space(match.text_content())
    elif isinstance(match, float):
        if not math.isfinite(match):
            return None
        return int(match) if match.is_integer() and abs(match) < 2**53 else match
    else:
        text = normalise_space(str(match))  # an attribute value or text node from XPath
    return parse_number(text) if rule.type == "number" else text


def _fields(
    rules: Mapping[str, ExtractRule], context: HtmlElement, base: str, *, relative: bool
) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, rule in rules.items():
        matches = _matches(rule, context, relative)
        if rule.all:
            values = (_value(rule, m, base) for m in matches)
            out[name] = [v for v in values if v is not None]
        else:
            out[name] = _value(rule, matches[0], base) if matches else None
    return out


def apply_rules(
    root: HtmlElement, rules: Mapping[str, ExtractRule], base: str
) -> dict[str, object]:
    """Field name → value: the first match (or a list of every match when ``all``), null when
    nothing matches (``[]`` when ``all``). Never raises for a page: a rule that fails to
    evaluate matches nothing."""
    return _fields(rules, root, base, relative=False)
