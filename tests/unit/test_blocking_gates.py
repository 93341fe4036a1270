"""The block detector's one-pass gates never change a verdict.

``inspect`` first asks one automaton whether any marker hint (or any JS-app sign) is on the
page at all and skips the exact checks when none is. Here every verdict is compared with the
plain per-marker search over the same window, on pages mixed from markers, look-alikes,
upper case, scripts and padding, in several charsets.
"""

from __future__ import annotations

import random
from urllib.parse import urlsplit

import pytest

from documents import looks_like_js_shell
from streams.tier.blocking import (
    BOT_WALL_MARKERS,
    JS_SIGNS,
    LOGIN_PATHS,
    PASSWORD_FORM,
    WALL_SCAN_BYTES,
    Verdict,
    decode_for_scan,
    inspect,
)

pytestmark = pytest.mark.unit

SNIPPETS = [
    "<title>Just a moment...</title>",
    "<TITLE>JUST A MOMENT...</TITLE>",
    "cf-chl-bypass",
    "Attention Required! | Cloudflare",
    "powered by cloudflare",
    "<title>Access Denied</title><p>Reference #18.1</p>",
    "access denied to nothing",
    "<div id='px-captcha'></div>",
    "https://geo.captcha-delivery.com/captcha/",
    "Incapsula incident ID: 42",
    "Pardon Our Interruption",
    "aws-waf-token",
    '<script src="https://www.google.com/recaptcha/api.js"></script>',
    "Verify you are human",
    "human resources and robotics",
    "Are you a robot?",
    "Please enable JavaScript and cookies to continue",
    "<noscript>turn it on</noscript>",
    '<div id="root"></div>',
    "<div class='x' id='__next' >\n </div>",
    "<div id=app></div>",
    "this site requires JavaScript",
    "<script>var a = '<div id=\"root\"></div>';</script>",
    "<p>" + "Plain article text about gardens. " * 12 + "</p>",
    "<style>body{color:red}</style>",
    "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e",
    "<p>ok</p>",
]
CHARSETS = ["utf-8", "iso-8859-1", "cp1252", "utf-16", "shift_jis", None, "no-such-charset"]


def reference(
    *, tier: str, status: int, url: str, final_url: str, body: bytes, content_type: str | None
) -> Verdict:
    """inspect() without the gates: every hint searched for, every check run."""
    is_html = content_type is None or "html" in content_type.lower()
    if is_html:
        head = decode_for_scan(body[:WALL_SCAN_BYTES], content_type).lower()
        for marker in BOT_WALL_MARKERS:
            if any(h in head for h in marker.hints) and marker.pattern.search(head):
                return Verdict("bot_wall", marker.name)
    if status == 401:
        return Verdict("login_wall", "http_401")
    text = decode_for_scan(body, content_type).lower() if is_html else ""
    if is_html and text:
        moved = LOGIN_PATHS.search(urlsplit(final_url).path) and not LOGIN_PATHS.search(
            urlsplit(url).path
        )
        if moved and PASSWORD_FORM.search(text):
            return Verdict("login_wall", "redirected_to_login")
        if (
            tier == "http"
            and 200 <= status < 300
            and any(sign in text for sign in JS_SIGNS)
            and looks_like_js_shell(decode_for_scan(body, content_type), 200)
        ):
            return Verdict("js_shell", "empty_js_shell")
    return Verdict("content")


def random_page(rng: random.Random) -> str:
    parts = rng.choices(SNIPPETS, k=rng.randint(0, 6))
    if rng.random() < 0.3:  # push some markers past the bot-wall window
        parts.insert(rng.randint(0, len(parts)), "<!-- " + "x" * WALL_SCAN_BYTES + " -->")
    return "<html><body>" + "".join(parts) + "</body></html>"


def test_gated_verdicts_equal_the_plain_search() -> None:
    rng = random.Random(20261207)
    verdicts = set()
    for _ in range(3000):
        charset = rng.choice(CHARSETS)
        encoding = charset if charset not in (None, "no-such-charset") else "utf-8"
        body = random_page(rng).encode(encoding, errors="replace")
        content_type = rng.choice(
            ["text/html", None, "application/json"]
            if charset is None
            else [f"text/html; charset={charset}"]
        )
        kwargs = {
            "tier": rng.choice(["http", "browser"]),
            "status": rng.choice([200, 200, 204, 401, 403, 503]),
            "url": "http://a.test/private",
            "final_url": rng.choice(["http://a.test/private", "http://a.test/login"]),
            "body": body,
            "content_type": content_type,
        }
        expected = reference(**kwargs)  # type: ignore[arg-type]
        assert inspect(**kwargs) == expected, (kwargs, expected)  # type: ignore[arg-type]
        verdicts.add(expected.marker)
    # The mix reaches every kind of verdict, so the comparison covers each branch.
    assert {"cloudflare_challenge", "captcha", "empty_js_shell", "http_401", None} <= verdicts


@pytest.mark.parametrize("charset", ["utf-16", "utf-8", "cp1252"])
def test_markers_are_found_whatever_the_charset_and_case(charset: str) -> None:
    body = "<HTML><TITLE>JUST A MOMENT...</TITLE></HTML>".encode(charset)
    verdict = inspect(
        tier="http",
        status=200,
        url="http://a.test/",
        final_url="http://a.test/",
        body=body,
        content_type=f"text/html; charset={charset}",
    )
    assert verdict == Verdict("bot_wall", "cloudflare_challenge")
