"""A page's bytes to text: which charset, in the order a browser would pick it."""

from __future__ import annotations

import codecs
import re
from typing import Final

from charset_normalizer import from_bytes

__all__ = ["decode_html", "normalise_charset"]

# How far the <meta charset> prescan looks (the HTML standard says 1024 bytes; pages with long
# heads put it later, and browsers find it there too after a reload).
META_SCAN_BYTES: Final = 4096
# How much a detector sees: enough for a verdict, bounded in time.
DETECT_BYTES: Final = 64 * 1024

_META_CHARSET: Final = re.compile(
    rb"""<meta\b[^>]{0,512}?charset\s*=\s*["']?\s*([A-Za-z0-9_:.\-]{1,40})""", re.IGNORECASE
)
_CT_CHARSET: Final = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_:.\-]{1,40})""", re.I)

# Labels a browser decodes differently from Python's codec of the same name (the WHATWG
# Encoding Standard's table): Latin-1 and ASCII labels mean windows-1252, and so on.
_BROWSER_ALIASES: Final = {
    "iso8859-1": "cp1252",
    "ascii": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "shift_jis": "cp932",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",
}
# The web's encodings (WHATWG), as Python names them. Anything else (rot13, punycode,
# unicode_escape...) is refused: a declared charset is untrusted input, not a codec to run.
_WEB_CODECS: Final = frozenset(
    {
        "utf-8", "utf-16-le", "utf-16-be", "utf-16", "cp866", "koi8-r", "koi8-u", "mac-roman",
        "mac-cyrillic", "cp874", "cp932", "cp949", "gb18030", "big5", "big5hkscs", "euc_jp",
        "iso2022_jp", "shift_jis", "euc_kr",
        *(f"iso8859-{n}" for n in (2, 3, 4, 5, 6, 7, 8, 10, 13, 14, 15, 16)),
        *(f"cp{n}" for n in range(1250, 1259)),
    }
)  # fmt: skip
# Names users recognise for the codecs whose Python name differs from the IANA one.
_DISPLAY: Final = {f"cp{n}": f"windows-{n}" for n in range(1250, 1259)} | {
    "cp874": "windows-874",
    "cp932": "windows-31j",
    "cp949": "windows-949",
}
_BOMS: Final = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def normalise_charset(label: str | None) -> str | None:
    """Python's codec for a charset label as a browser reads it, or None if it is not a web
    encoding Python knows."""
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().strip("\"'")).name
    except (LookupError, ValueError):
        return None
    name = _BROWSER_ALIASES.get(name, name)
    return name if name in _WEB_CODECS else None


def _display(codec: str) -> str:
    return _DISPLAY.get(codec, codec)


def _decode(body: bytes, codec: str) -> str | None:
    try:
        return body.decode(codec, "replace")
    except (LookupError, ValueError):
        return None


def decode_html(body: bytes, content_type: str | None) -> tuple[str, str]:
    """The page as text and the name of the charset used. Never raises.

    Order: a byte-order mark (it wins over the header, as in browsers: it cannot be there by
    accident), the Content-Type ``charset``, ``<meta charset>`` or ``<meta http-equiv>`` in the
    first 4 KB, valid UTF-8, then detection (charset-normalizer on the first 64 KB), then
    windows-1252. An unknown or non-web charset label falls through to the next rule; bytes
    the charset cannot decode become U+FFFD.
    """
    for bom, bom_codec in _BOMS:
        if body.startswith(bom):
            return body[len(bom) :].decode(bom_codec, "replace"), bom_codec
    declared: list[str | None] = []
    if content_type:
        m = _CT_CHARSET.search(content_type)
        declared.append(normalise_charset(m.group(1)) if m else None)
    m2 = _META_CHARSET.search(body, 0, META_SCAN_BYTES)
    if m2:
        meta = normalise_charset(m2.group(1).decode("ascii"))
        # A <meta> cannot declare UTF-16: the bytes that spelled it were ASCII (HTML standard).
        declared.append("utf-8" if meta and meta.startswith("utf-16") else meta)
    for codec in declared:
        if codec is not None:
            decoded = _decode(body, codec)
            if decoded is not None:
                return decoded, _display(codec)
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as e:
        if e.start >= len(body) - 3 and e.reason == "unexpected end of data":
            return body.decode("utf-8", "replace"), "utf-8"  # cut mid-character
    detected = _detect(body[:DETECT_BYTES]) or "cp1252"
    return body.decode(detected, "replace"), _display(detected)


def _detect(sample: bytes) -> str | None:
    try:
        best = from_bytes(sample).best()
    except Exception:  # a detector bug must not fail a page; cp1252 decodes anything
        return None
    return normalise_charset(best.encoding) if best is not None else None
