"""documents: number parsing and extraction rules on a page (beyond the corpus case)."""

from __future__ import annotations

import json

import pytest

from documents import decode_html, derive, parse_number
from schemas.extract import parse_extract_rules

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("1,299.00", 1299.0),
        ("1.299,00", 1299.0),
        ("€ 12,50", 12.5),
        ("$12.50 incl. VAT", 12.5),
        ("1 299 kr", 1299),
        ("1\u00a0299,99 €", 1299.99),
        ("1,299", 1299),
        ("1.299", 1299),
        ("0.125", 0.125),
        ("3.14159", 3.14159),
        ("-5 °C", -5),
        ("\u22125", -5),
        ("1,000,000", 1_000_000),
        ("Showing 3 of 120", 3),
        ("12 items 34", 12),
        ("Sold out", None),
        ("", None),
        ("9" * 40, None),
    ],
)
def test_parse_number(text: str, number: float | None) -> None:
    assert parse_number(text) == number


def _extract(html: str, raw: object, url: str = "https://e.example/a/b") -> object:
    docs = derive(
        html.encode(),
        content_type="text/html",
        url=url,
        status=200,
        headers={},
        formats=["extract"],
        extract=parse_extract_rules(raw),
    )
    return json.loads(docs["extract"])


def test_attr_urls_are_absolute_other_attrs_as_is() -> None:
    html = '<base href="/x/"><a href="p?q=1#f" data-id=" 7 ">A</a><img src="i.png">'
    got = _extract(
        html,
        {
            "u": {"css": "a", "attr": "href"},
            "i": {"css": "img", "attr": "src"},
            "d": {"css": "a", "attr": "data-id"},
            "n": {"css": "a", "attr": "nope"},
        },
    )
    assert got == {
        "u": "https://e.example/x/p?q=1",
        "i": "https://e.example/x/i.png",
        "d": "7",
        "n": None,
    }


def test_a_rule_failing_at_evaluation_matches_nothing() -> None:
    got = _extract("<p>x</p>", {"ns": {"xpath": "//foo:bar"}, "v": {"xpath": "$x", "all": True}})
    assert got == {"ns": None, "v": []}


def test_html_type_and_xpath_values() -> None:
    html = "<ul><li>a <b>1</b></li><li>b</li></ul>"
    got = _extract(
        html,
        {
            "h": {"css": "li", "type": "html"},
            "t": {"xpath": "//li/text()", "all": True},
            "n": {"xpath": "count(//li)"},
            "s": {"xpath": "string(//b)", "type": "number"},
        },
    )
    assert got == {"h": "<li>a <b>1</b></li>", "t": ["a", "b"], "n": 2, "s": 1}


def test_nested_css_is_relative_to_each_match() -> None:
    html = "<h2>page</h2><div class=c><h2>one</h2></div><div class=c><p>no heading</p></div>"
    got = _extract(html, {"cards": {"css": "div.c", "all": True, "fields": {"h": "h2"}}})
    assert got == {"cards": [{"h": "one"}, {"h": None}]}


@pytest.mark.parametrize(
    ("body", "content_type", "text", "charset"),
    [
        ("é".encode(), "text/html; charset=utf-8", "é", "utf-8"),
        ("é".encode("latin-1"), "text/html; charset=ISO-8859-1", "é", "windows-1252"),
        (b"\x80", "text/html; charset=latin1", "€", "windows-1252"),  # browsers read cp1252
        ("é".encode(), "text/html; charset=rot13", "é", "utf-8"),  # not a web encoding
        ("<meta charset=utf-16>é".encode(), None, "<meta charset=utf-16>é", "utf-8"),
        (b"\xef\xbb\xbf\xc3\xa9", "text/html; charset=windows-1251", "é", "utf-8"),  # BOM wins
        (b"\xff\xfe\xe9\x00", None, "é", "utf-16-le"),
        ("caf\u00e9".encode()[:-1], None, "caf\ufffd", "utf-8"),  # cut mid-character
    ],
)
def test_decode_html(body: bytes, content_type: str | None, text: str, charset: str) -> None:
    assert decode_html(body, content_type) == (text, charset)
