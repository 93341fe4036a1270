"""Is this page the content, or something standing in front of it?

One table of markers, easy to extend. A page behind a bot wall, a challenge or a login wall is
``blocked`` whatever its HTTP status, so it is never reported as succeeded; a page that is an
empty JavaScript shell is ``blocked`` for the http tier only (a browser would render it).
This module detects; it never tries to get around anything.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import ahocorasick_rs

from documents import looks_like_js_shell

SCAN_BYTES = 128 * 1024  # login and JS-shell checks
WALL_SCAN_BYTES = 16 * 1024  # bot-wall markers: challenge pages are small


@dataclass(frozen=True, slots=True)
class Marker:
    """``hints`` are plain lower-case substrings; the regex runs only when one is present (a
    substring search is ~20x cheaper than a case-insensitive regex over the page)."""

    name: str
    hints: tuple[str, ...]
    pattern: re.Pattern[str]


def _m(name: str, hints: tuple[str, ...], regex: str) -> Marker:
    return Marker(name, hints, re.compile(regex))


# Challenge and bot-wall pages of common providers, and generic wording. Matched against the
# lower-cased first WALL_SCAN_BYTES of the page (such pages are small).
BOT_WALL_MARKERS: tuple[Marker, ...] = (
    _m(
        "cloudflare_challenge",
        ("cf-chl-", "challenges.cloudflare.com", "just a moment"),
        r"cf-chl-|challenges\.cloudflare\.com|<title>just a moment\.\.\.</title>",
    ),
    _m(
        "cloudflare_block",
        ("cloudflare", "cf-error-details"),
        r"attention required! \| cloudflare|cf-error-details",
    ),
    _m("akamai_block", ("access denied",), r"<title>access denied</title>[\s\S]{0,400}reference #"),
    _m("perimeterx", ("px-captcha", "_pxhd", "perimeterx"), r"px-captcha|_pxhd|perimeterx"),
    _m("datadome", ("captcha-delivery.com", "datadome"), r"captcha-delivery\.com|datadome"),
    _m("imperva", ("incapsula",), r"incapsula incident id|_incapsula_resource"),
    _m("distil", ("pardon our interruption",), r"pardon our interruption"),
    _m("aws_waf", ("aws-waf-token", "awswaf"), r"aws-waf-token|awswaf"),
    _m("captcha", ("captcha",), r"g-recaptcha|h-captcha|hcaptcha\.com|recaptcha/api\.js"),
    _m(
        "verify_human",
        ("human", "robot", "unusual traffic"),
        r"verify (that )?you are (a )?human|are you a robot|unusual traffic from your",
    ),
    _m(
        "js_required_wall",
        ("enable javascript and cookies", "enable js and cookies"),
        r"please enable (javascript|js) and cookies to continue",
    ),
)


def _any_of(needles: list[str]) -> ahocorasick_rs.BytesAhoCorasick:
    """One automaton for several substrings. Only "is any of them there" is asked of it, which
    every match kind answers; leftmost-first lets it use a vectorised prefilter (~5x faster)."""
    return ahocorasick_rs.BytesAhoCorasick(
        sorted({n.encode() for n in needles}), matchkind=ahocorasick_rs.MatchKind.LeftmostFirst
    )


# Every hint of every marker: a page without any of them (nearly every page) is cleared in one
# pass over its head, instead of a substring search per hint (~20x the CPU).
_WALL_HINTS = _any_of([h for m in BOT_WALL_MARKERS for h in m.hints])

LOGIN_PATHS = re.compile(
    r"/(login|signin|sign-in|sign_in|auth|account/login|users/sign_in)\b", re.I
)
PASSWORD_FORM = re.compile(r"<input[^>]+type=[\"']?password")

# What a page rendered by JavaScript cannot do without: a script, or words about JavaScript
# (in a <noscript> or in the text). A page with none of these (nearly every page the http tier
# fetches, and every page of the bench) skips the decode and the parse; the rest is decided by
# parsing the page (documents.looks_like_js_shell), so how its markup is spelled does not matter
# (``<div id=app></div>`` unquoted, as minifiers write it, is the same empty app root).
JS_SIGNS = ("<script", "<noscript", "javascript")
_JS_HINTS = _any_of(list(JS_SIGNS))


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # "content" | "bot_wall" | "login_wall" | "js_shell"
    marker: str | None = None

    @property
    def blocked(self) -> bool:
        return self.kind != "content"


def _charset(content_type: str | None) -> str:
    if content_type and "charset=" in content_type.lower():
        return content_type.lower().split("charset=", 1)[1].split(";")[0].strip(" \"'") or "utf-8"
    return "utf-8"


def _decode(data: bytes, charset: str) -> str:
    """``data`` in ``charset`` if Python knows it, else UTF-8; never raises on invalid bytes."""
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def decode_for_scan(body: bytes, content_type: str | None) -> str:
    """Text for marker scanning: the first SCAN_BYTES in the declared charset if Python knows
    it, else UTF-8; never raises on invalid bytes."""
    return _decode(body[:SCAN_BYTES], _charset(content_type))


@functools.lru_cache(maxsize=64)
def _ascii_compatible(charset: str) -> bool:
    """Whether ASCII text keeps its bytes in ``charset`` (UTF-8, Latin-1, cp1252, GBK…), so an
    ASCII marker can be searched for in the raw bytes."""
    probe = "<title>Just a moment...</title> cf-chl-_PXHD|#"
    try:
        return probe.encode(charset) == probe.encode("ascii")
    except (LookupError, UnicodeError):
        return False


def _may_be_js_shell(body: bytes, charset: str) -> bool:
    """Whether the page has a script or words about JavaScript (:data:`JS_SIGNS`): a page
    without any is never a JavaScript shell. One pass over the raw bytes where the charset
    keeps ASCII as ASCII."""
    if _ascii_compatible(charset):
        return bool(_JS_HINTS.find_matches_as_indexes(body[:SCAN_BYTES].lower()))
    text = _decode(body[:SCAN_BYTES], charset).lower()
    return any(sign in text for sign in JS_SIGNS)


def _bot_wall_marker(body: bytes, charset: str) -> str | None:
    """The first of BOT_WALL_MARKERS found in the lower-cased head of an HTML page, if any."""
    raw = body[:WALL_SCAN_BYTES]
    if _ascii_compatible(charset) and not _WALL_HINTS.find_matches_as_indexes(raw.lower()):
        return None  # no marker's hint is there, so no marker can match
    head = _decode(raw, charset).lower()
    for marker in BOT_WALL_MARKERS:
        if any(h in head for h in marker.hints) and marker.pattern.search(head):
            return marker.name
    return None


def inspect(
    *,
    tier: str,
    status: int,
    url: str,
    final_url: str,
    body: bytes,
    content_type: str | None,
    min_text_chars: int = 200,
) -> Verdict:
    """Classify a response body. Pure; looks at the first 128 KiB."""
    is_html = content_type is None or "html" in content_type.lower()
    charset = _charset(content_type)
    if is_html:
        marker = _bot_wall_marker(body, charset)
        if marker is not None:
            return Verdict("bot_wall", marker)
    if status == 401:
        return Verdict("login_wall", "http_401")
    if not is_html or not body:
        return Verdict("content")
    text: str | None = None  # the lower-cased page, decoded only when a check needs it
    if LOGIN_PATHS.search(urlsplit(final_url).path or "") and not LOGIN_PATHS.search(
        urlsplit(url).path or ""
    ):
        text = _decode(body[:SCAN_BYTES], charset).lower()
        if PASSWORD_FORM.search(text):
            return Verdict("login_wall", "redirected_to_login")
    if (
        tier == "http"
        and 200 <= status < 300
        and _may_be_js_shell(body, charset)
        and looks_like_js_shell(_decode(body[:SCAN_BYTES], charset), min_text_chars)
    ):
        return Verdict("js_shell", "empty_js_shell")
    return Verdict("content")
