"""A job's extraction rules (``options.extract``): their one type, validator and wire form.

A user sends a JSON object of field name → rule; a rule is a CSS selector string (the short form)
or an object ``{"css" | "xpath", "attr", "all", "type", "fields"}``. :func:`parse_extract_rules`
is the one validator: the gateway turns an :class:`InvalidExtract` into a 400 with its message,
and the worker reads the job's rules back with :func:`rules_from_json`, which validates again
(producers may publish straight to Kafka). So every selector that reaches a worker compiles, and
the number and nesting of rules are bounded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

from cssselect import HTMLTranslator, SelectorError
from lxml import etree

from schemas.text import UNPRINTABLE

__all__ = [
    "MAX_DEPTH",
    "MAX_NAME_CHARS",
    "MAX_RULES",
    "MAX_SELECTOR_CHARS",
    "RULE_KEYS",
    "VALUE_TYPES",
    "ExtractRule",
    "InvalidExtract",
    "ValueType",
    "css_to_xpath",
    "parse_extract_rules",
    "rules_from_json",
    "rules_to_json",
]

ValueType = Literal["text", "html", "number"]
VALUE_TYPES: Final[tuple[str, ...]] = get_args(ValueType)
RULE_KEYS: Final = frozenset({"css", "xpath", "attr", "all", "type", "fields"})

MAX_RULES: Final = 50  # rules in all, nested ones included
MAX_DEPTH: Final = 3  # top-level rules are depth 1
MAX_NAME_CHARS: Final = 100  # a field name, and an attribute name
MAX_SELECTOR_CHARS: Final = 1000

# Characters an HTML attribute name cannot hold (HTML Living Standard §13.1.2.3).
_ATTR_FORBIDDEN: Final = frozenset(" \t\n\f\r\"'>/=")

_TRANSLATOR: Final = HTMLTranslator()


class InvalidExtract(ValueError):
    """The rules are not valid; the message names the field path (``extract.a.fields.b``)."""


@dataclass(frozen=True, slots=True)
class ExtractRule:
    """One field's rule. Exactly one of ``css`` and ``xpath``.

    ``attr``: take this attribute of each match instead of its content. ``all``: a list of every
    match instead of the first. ``type``: ``text`` (normalised text), ``html`` (outer HTML) or
    ``number`` (the first number in the text). ``fields``: for each match, an object of these
    sub-rules evaluated relative to the match (``attr`` and ``type`` then do not apply).
    """

    css: str | None = None
    xpath: str | None = None
    attr: str | None = None
    all: bool = False
    type: ValueType = "text"
    fields: dict[str, ExtractRule] | None = None

    def __post_init__(self) -> None:
        if (self.css is None) == (self.xpath is None):
            raise InvalidExtract("a rule needs exactly one of 'css' and 'xpath'")


def css_to_xpath(selector: str, *, relative: bool = False) -> str:
    """The XPath of a CSS selector: from the document (``descendant-or-self::``), or below a
    context element when ``relative``. Raises cssselect's ``SelectorError`` if it is not valid."""
    prefix = "descendant::" if relative else "descendant-or-self::"
    return _TRANSLATOR.css_to_xpath(selector, prefix=prefix)


def parse_extract_rules(raw: object) -> dict[str, ExtractRule]:
    """Validate the JSON a user sent (already decoded) into rules, or raise :class:`InvalidExtract`.

    Limits: at most :data:`MAX_RULES` rules in all and :data:`MAX_DEPTH` levels of ``fields``;
    field names of 1-100 printable characters; selectors of at most 1000 characters without
    control characters, that compile; no keys beyond :data:`RULE_KEYS`.
    """
    counter = [0]
    return _parse_fields(raw, "extract", 1, counter)


def _parse_fields(raw: object, path: str, depth: int, counter: list[int]) -> dict[str, ExtractRule]:
    if not isinstance(raw, Mapping):
        raise InvalidExtract(f"{path}: must be an object of field name to rule")
    if not raw:
        raise InvalidExtract(f"{path}: must name at least one field")
    if depth > MAX_DEPTH:
        raise InvalidExtract(f"{path}: rules nest at most {MAX_DEPTH} levels deep")
    rules: dict[str, ExtractRule] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_CHARS:
            raise InvalidExtract(f"{path}: a field name must be 1-{MAX_NAME_CHARS} characters")
        if not name.isprintable():
            raise InvalidExtract(f"{path}: field name {name!r} has unprintable characters")
        counter[0] += 1
        if counter[0] > MAX_RULES:
            raise InvalidExtract(f"extract: at most {MAX_RULES} rules in all (nested included)")
        rules[name] = _parse_rule(value, f"{path}.{name}", depth, counter)
    return rules


def _parse_rule(raw: object, path: str, depth: int, counter: list[int]) -> ExtractRule:
    if isinstance(raw, str):
        return ExtractRule(css=_check_selector(raw, "css", path, nested=depth > 1))
    if not isinstance(raw, Mapping):
        raise InvalidExtract(f"{path}: a rule is a CSS selector string or an object")
    unknown = sorted(str(k) for k in raw if k not in RULE_KEYS)
    if unknown:
        raise InvalidExtract(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(sorted(RULE_KEYS))}"
        )
    css, xpath = raw.get("css"), raw.get("xpath")
    if (css is None) == (xpath is None):
        raise InvalidExtract(f"{path}: give exactly one of 'css' and 'xpath'")
    if css is not None:
        css = _check_selector(css, "css", path, nested=depth > 1)
    if xpath is not None:
        xpath = _check_selector(xpath, "xpath", path, nested=depth > 1)
    attr = raw.get("attr")
    if attr is not None and (
        not isinstance(attr, str)
        or not 1 <= len(attr) <= MAX_NAME_CHARS
        or UNPRINTABLE.search(attr)
        or any(c in _ATTR_FORBIDDEN for c in attr)
    ):
        raise InvalidExtract(f"{path}.attr: must be an attribute name of 1-{MAX_NAME_CHARS} chars")
    all_ = raw.get("all", False)
    if not isinstance(all_, bool):
        raise InvalidExtract(f"{path}.all: must be true or false")
    type_ = raw.get("type", "text")
    if type_ not in VALUE_TYPES:
        raise InvalidExtract(f"{path}.type: must be one of {', '.join(VALUE_TYPES)}")
    fields = None
    if raw.get("fields") is not None:
        if attr is not None or type_ != "text":
            raise InvalidExtract(f"{path}: 'fields' cannot be combined with 'attr' or 'type'")
        fields = _parse_fields(raw["fields"], f"{path}.fields", depth + 1, counter)
    return ExtractRule(css=css, xpath=xpath, attr=attr, all=all_, type=type_, fields=fields)


def _check_selector(value: object, kind: str, path: str, *, nested: bool) -> str:
    where = f"{path}: " if kind == "css" else f"{path}.xpath: "
    if not isinstance(value, str) or not value.strip():
        raise InvalidExtract(f"{where}{kind} must be a non-empty string")
    if len(value) > MAX_SELECTOR_CHARS:
        raise InvalidExtract(f"{where}{kind} is longer than {MAX_SELECTOR_CHARS} characters")
    if UNPRINTABLE.search(value):
        raise InvalidExtract(f"{where}{kind} has control characters")
    try:
        expr = css_to_xpath(value, relative=nested) if kind == "css" else value
        etree.XPath(expr)
    except (SelectorError, etree.XPathError, ValueError) as e:
        raise InvalidExtract(f"{where}invalid {kind.upper()} selector {value!r}: {e}") from None
    return value


def _rule_to_obj(rule: ExtractRule) -> dict[str, object]:
    obj: dict[str, object] = {"css": rule.css} if rule.css is not None else {"xpath": rule.xpath}
    if rule.attr is not None:
        obj["attr"] = rule.attr
    if rule.all:
        obj["all"] = True
    if rule.type != "text":
        obj["type"] = rule.type
    if rule.fields is not None:
        obj["fields"] = {k: _rule_to_obj(v) for k, v in rule.fields.items()}
    return obj


def rules_to_json(rules: Mapping[str, ExtractRule]) -> str:
    """The rules' canonical JSON (the job carries it on the wire): every rule as an object, keys
    sorted, compact, defaults (``all: false``, ``type: "text"``, no ``attr``) left out."""
    obj = {k: _rule_to_obj(v) for k, v in rules.items()}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def rules_from_json(text: str) -> dict[str, ExtractRule]:
    """Rules read back from their JSON (what :func:`rules_to_json` wrote, or any valid rules),
    validated again; raises :class:`InvalidExtract`."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise InvalidExtract(f"extract: not valid JSON: {e}") from None
    return parse_extract_rules(raw)
