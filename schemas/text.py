"""Strings that every consumer of our records can store: Avro (UTF-8), JSON and PostgreSQL text.

Websites and producers send strings those refuse: aiohttp keeps header bytes that are not UTF-8
as lone surrogates (``'caf\\udce9'``), which no UTF-8 encoder accepts, and PostgreSQL text
cannot hold NUL. :func:`storable` is the one place such strings are repaired.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

__all__ = ["UNPRINTABLE", "storable", "storable_map"]

# C0 controls, DEL and lone surrogates: never accepted in an identifier or an option string.
UNPRINTABLE: Final = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def storable(value: str) -> str:
    """``value`` without NUL, with undecodable bytes read as Latin-1 (RFC 9110's historical
    charset for header octets; every byte maps to one character) and any other lone surrogate
    replaced by '?'. ASCII without NUL, the common case, is returned as is."""
    if value.isascii():
        return value.replace("\x00", "") if "\x00" in value else value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that did not come from a byte
            value = value.encode("utf-8", "replace").decode("utf-8")
        else:
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                value = raw.decode("latin-1")
    return value.replace("\x00", "") if "\x00" in value else value


def storable_map(values: Mapping[str, str]) -> dict[str, str]:
    """:func:`storable` of every key and value (later keys win if two repair to the same)."""
    return {storable(k): storable(v) for k, v in values.items()}
