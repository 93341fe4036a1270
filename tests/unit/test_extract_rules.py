"""schemas.extract: what extraction rules a job may carry, their errors and their wire form."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.extract import (
    MAX_RULES,
    ExtractRule,
    InvalidExtract,
    parse_extract_rules,
    rules_from_json,
    rules_to_json,
)

pytestmark = pytest.mark.unit


def test_short_form_is_a_css_selector_with_defaults() -> None:
    rules = parse_extract_rules({"title": "h1"})
    assert rules == {"title": ExtractRule(css="h1")}
    assert rules["title"].type == "text" and not rules["title"].all and rules["title"].attr is None


def test_full_form_with_nested_fields() -> None:
    rules = parse_extract_rules(
        {
            "products": {
                "css": "li.product",
                "all": True,
                "fields": {
                    "name": "h2",
                    "url": {"css": "a", "attr": "href"},
                    "price": {"xpath": ".//span[@class='price']", "type": "number"},
                },
            }
        }
    )
    products = rules["products"]
    assert products.all and products.fields is not None
    assert products.fields["url"] == ExtractRule(css="a", attr="href")
    assert products.fields["price"] == ExtractRule(xpath=".//span[@class='price']", type="number")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "extract: must be an object"),
        ([], "extract: must be an object"),
        ({}, "extract: must name at least one field"),
        ({"": "h1"}, "extract: a field name must be 1-100"),
        ({"x" * 101: "h1"}, "extract: a field name must be 1-100"),
        ({"a\nb": "h1"}, "unprintable"),
        ({"t": 3}, "extract.t: a rule is a CSS selector string or an object"),
        ({"t": "..bad"}, "extract.t: invalid CSS selector '..bad'"),
        ({"t": "p::text"}, "extract.t: invalid CSS selector"),
        ({"t": {"xpath": "//a["}}, "extract.t.xpath: invalid XPATH selector"),
        ({"t": {"css": "a", "xpath": "//a"}}, "exactly one of 'css' and 'xpath'"),
        ({"t": {"attr": "href"}}, "exactly one of 'css' and 'xpath'"),
        ({"t": {"css": "a", "atr": "href"}}, "unknown key(s) 'atr'"),
        ({"t": {"css": "a", "all": 1}}, "extract.t.all: must be true or false"),
        ({"t": {"css": "a", "type": "int"}}, "extract.t.type: must be one of text, html, number"),
        ({"t": {"css": "a", "attr": "a b"}}, "extract.t.attr: must be an attribute name"),
        ({"t": {"css": "a", "attr": ""}}, "extract.t.attr"),
        ({"t": "a" * 1001}, "longer than 1000"),
        ({"t": "a\x00"}, "control characters"),
        ({"t": "   "}, "non-empty string"),
        ({"t": {"css": "a", "fields": {}}}, "extract.t.fields: must name at least one field"),
        ({"t": {"css": "a", "fields": {"u": "b"}, "attr": "x"}}, "cannot be combined"),
        (
            {"p": {"css": "li", "fields": {"price": ".."}}},
            "extract.p.fields.price: invalid CSS selector '..'",
        ),
    ],
)
def test_invalid_rules_name_the_field(raw: object, message: str) -> None:
    with pytest.raises(InvalidExtract) as info:
        parse_extract_rules(raw)
    assert message in str(info.value)


def test_depth_is_limited_to_three() -> None:
    three = {"a": {"css": "x", "fields": {"b": {"css": "y", "fields": {"c": "z"}}}}}
    parse_extract_rules(three)
    four = {
        "a": {
            "css": "x",
            "fields": {"b": {"css": "y", "fields": {"c": {"css": "z", "fields": {"d": "w"}}}}},
        }
    }
    with pytest.raises(
        InvalidExtract, match=r"extract\.a\.fields\.b\.fields\.c\.fields: .*3 levels"
    ):
        parse_extract_rules(four)


def test_rule_count_includes_nested_rules() -> None:
    parse_extract_rules({f"f{i}": "p" for i in range(MAX_RULES)})
    with pytest.raises(InvalidExtract, match="at most 50 rules"):
        parse_extract_rules({f"f{i}": "p" for i in range(MAX_RULES + 1)})
    nested = {f"f{i}": {"css": "li", "fields": {"a": "a", "b": "b"}} for i in range(17)}
    with pytest.raises(InvalidExtract, match="at most 50 rules"):
        parse_extract_rules(nested)  # 17 x 3 = 51


def test_the_dataclass_refuses_neither_or_both_selectors() -> None:
    with pytest.raises(InvalidExtract):
        ExtractRule()
    with pytest.raises(InvalidExtract):
        ExtractRule(css="a", xpath="//a")


def test_json_is_canonical_and_round_trips() -> None:
    rules = parse_extract_rules(
        {"z": "h1", "a": {"xpath": "//a", "attr": "href", "all": True, "type": "text"}}
    )
    text = rules_to_json(rules)
    assert text == '{"a":{"all":true,"attr":"href","xpath":"//a"},"z":{"css":"h1"}}'
    assert rules_from_json(text) == rules


def test_from_json_refuses_bad_json() -> None:
    with pytest.raises(InvalidExtract, match="not valid JSON"):
        rules_from_json("{")
    with pytest.raises(InvalidExtract):
        rules_from_json("[" * 100_000)


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_selectors = st.sampled_from(["h1", "a[href]", "li > span.price", "..", "//a", "p::text", "#x"])
_json = st.recursive(
    _scalars | _selectors,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["css", "xpath", "attr", "all", "type", "fields", "name", ""])
            | st.text(max_size=8),
            inner,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_parse_raises_only_invalid_extract(raw: object) -> None:
    try:
        rules = parse_extract_rules(raw)
    except InvalidExtract:
        return
    assert rules_from_json(rules_to_json(rules)) == rules


_rule_objects = st.fixed_dictionaries(
    {"css": st.sampled_from(["h1", "a[href]", "li > span", "div.a.b", "p:nth-child(2)"])},
    optional={
        "attr": st.sampled_from(["href", "src", "data-id"]),
        "all": st.booleans(),
        "type": st.sampled_from(["text", "html", "number"]),
    },
)


@given(st.dictionaries(st.text(min_size=1, max_size=10), _rule_objects, min_size=1, max_size=10))
def test_valid_rules_round_trip(raw: dict[str, dict[str, object]]) -> None:
    raw = {k: v for k, v in raw.items() if k.isprintable()} or {"t": "h1"}
    rules = parse_extract_rules(raw)
    text = rules_to_json(rules)
    assert rules_from_json(text) == rules
    assert json.loads(text) == json.loads(rules_to_json(rules_from_json(text)))
