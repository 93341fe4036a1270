"""schemas.urls.validate_url: what a job URL may be, and its normal form."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from schemas.urls import MAX_URL_LENGTH, InvalidURL, validate_url

pytestmark = pytest.mark.unit

FULLWIDTH_EXAMPLE = "".join(chr(ord(c) + 0xFEE0) for c in "EXAMPLE")  # U+FF25...
FULLWIDTH_127_1 = "".join(chr(ord(c) + 0xFEE0) for c in "127.1")  # U+FF11..., U+FF0E


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/", "http://example.com/"),
        ("https://example.com/a/b?c=d&e=f", "https://example.com/a/b?c=d&e=f"),
        ("HTTP://Example.COM", "http://example.com/"),
        ("HtTpS://WWW.EXAMPLE.com/Path/Keeps/Case", "https://www.example.com/Path/Keeps/Case"),
        ("http://example.com/page#fragment", "http://example.com/page"),
        ("https://example.com.:8443/x", "https://example.com:8443/x"),
        ("http://example.com:80/", "http://example.com:80/"),
        ("http://example.com:65535", "http://example.com:65535/"),
        ("http://example.com:/", "http://example.com/"),
        ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080/x"),
        ("http://[::1]/", "http://[::1]/"),
        ("http://[2001:DB8:0:0::1]:8443/p", "http://[2001:db8::1]:8443/p"),
        ("http://localhost/", "http://localhost/"),
        ("http://bücher.example/", "http://xn--bcher-kva.example/"),
        ("https://Bücher.Example/straße", "https://xn--bcher-kva.example/straße"),
        ("http://例え.テスト/", "http://xn--r8jz45g.xn--zckzah/"),
        (f"https://{FULLWIDTH_EXAMPLE}.com/", "https://example.com/"),  # UTS 46 maps it
        ("http://xn--bcher-kva.example/", "http://xn--bcher-kva.example/"),
        # IPv4 in numeric spellings becomes its dotted quad, as in browsers (WHATWG URL)
        ("http://127.1/", "http://127.0.0.1/"),
        ("http://127.1.:8080/x", "http://127.0.0.1:8080/x"),
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://0X7F.0.0.1/", "http://127.0.0.1/"),
        ("http://0177.0.0.1/", "http://127.0.0.1/"),
        ("http://127.0.1/", "http://127.0.0.1/"),
        ("http://0x7f000001/", "http://127.0.0.1/"),
        ("https://134744072/dns?q", "https://8.8.8.8/dns?q"),
        (f"http://{FULLWIDTH_127_1}/", "http://127.0.0.1/"),  # full-width, mapped by UTS 46
        ("http://127。0。0。1/", "http://127.0.0.1/"),  # ideographic full stops
        ("http://1.2.3.example/", "http://1.2.3.example/"),  # ends in a name: a name
    ],
)
def test_accepted_and_normalised(url: str, expected: str) -> None:
    assert validate_url(url) == expected


def test_normal_form_is_a_fixed_point() -> None:
    once = validate_url("HTTPS://Bücher.Example.:443/a?b#c")
    assert validate_url(once) == once


def test_longest_allowed_url() -> None:
    prefix = "http://example.com/"
    url = prefix + "a" * (MAX_URL_LENGTH - len(prefix))
    assert len(url) == MAX_URL_LENGTH
    assert validate_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "required"),
        ("ftp://example.com/file", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("//example.com/", "scheme"),
        ("example.com", "scheme"),
        ("http:///path", "no host"),
        ("http://", "no host"),
        ("http://user@example.com/", "user:password"),
        ("http://user:pw@example.com/", "user:password"),
        ("http://:pw@example.com/", "user:password"),
        ("http://@example.com/", "user:password"),
        ("http://exa mple.com/", "whitespace"),
        (" http://example.com/", "whitespace"),
        ("http://example.com/\n", "whitespace"),
        ("http://example.com/a\tb", "whitespace"),
        ("http://example.com/\x00", "control"),
        ("http://example.com/\x1b[0m", "control"),
        ("http://example.com/\x7f", "control"),
        ("http://example.com/\x9b", "control"),  # C1
        ("http://exa\udcffmple.com/", "Unicode"),  # lone surrogates: UTF-8 cannot encode them
        ("http://example.com/\ud800", "Unicode"),
        ("http://example.com/?q=\udfff", "Unicode"),
        ("http://example.com/\u00a0", "whitespace"),
        ("http://example.com:0/", "(?i)port"),
        ("http://example.com:65536/", "(?i)port"),
        ("http://example.com:99999/", "(?i)port"),
        ("http://example.com:-1/", "(?i)port"),
        ("http://example.com:abc/", "(?i)port"),
        ("http://[::1/", "parsed"),
        ("http://-bad.example/", "valid domain"),
        ("http://bad-.example/", "valid domain"),
        ("http://a..b/", "valid domain"),
        ("http://my_host.example/", "valid domain"),
        ("http://xn--zz.example/", "valid domain"),
        ("http://" + "a" * 64 + ".example/", "valid domain"),
        ("http://" + ".".join(["a" * 60] * 5) + "/", "valid domain"),  # 304 > 253 characters
        ("http://1.2.3.256/", "IPv4"),  # a host ending in a number must be an address
        ("http://1.2.3.4.5/", "IPv4"),
        ("http://4294967296/", "IPv4"),
        ("http://0.0.0.09/", "IPv4"),
        ("http://example.0x10/", "IPv4"),
    ],
)
def test_rejected(url: str, message: str) -> None:
    with pytest.raises(InvalidURL, match=message):
        validate_url(url)


def test_too_long() -> None:
    prefix = "http://example.com/"
    with pytest.raises(InvalidURL, match="longer than"):
        validate_url(prefix + "a" * (MAX_URL_LENGTH - len(prefix) + 1))


def test_invalid_url_is_a_value_error() -> None:
    # callers catching ValueError (pydantic validators) must see it
    assert issubclass(InvalidURL, ValueError)


@given(st.text(max_size=40) | st.text(max_size=40).map(lambda t: "http://" + t))
@example("http://exa\udcffmple.com/")
@example("http://0x7f.1/\ud800")
@example("http://[::ffff:127.1]/")
def test_any_text_is_a_url_or_invalid_url(text: str) -> None:
    """No input ends in anything but InvalidURL; what passes is UTF-8 text and a fixed point."""
    try:
        url = validate_url(text)
    except InvalidURL:
        return
    url.encode("utf-8")
    assert validate_url(url) == url
