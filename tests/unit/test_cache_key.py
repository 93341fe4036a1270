"""The result cache's identity of a fetch: the URL normaliser and the key (schemas/cache.py)."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.cache import cache_key, cache_url, shareable
from schemas.records import FetchOptions
from schemas.urls import InvalidURL

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("HTTP://Example.COM/", "http://example.com/"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("https://example.com:80/a", "https://example.com:80/a"),  # not https' default
        ("http://example.com/a#section", "http://example.com/a"),
        ("http://example.com/?b=2&a=1&a=0", "http://example.com/?a=1&a=0&b=2"),  # stable
        ("http://example.com/?a=x+y&b=", "http://example.com/?a=x%20y&b="),
        ("http://example.com/%7euser/%2f", "http://example.com/~user/%2F"),
        ("http://bücher.example/", "http://xn--bcher-kva.example/"),
        ("http://0x7f.1/", "http://127.0.0.1/"),
        ("http://example.com./a", "http://example.com/a"),
    ],
)
def test_normalises(url: str, normalised: str) -> None:
    assert cache_url(url) == normalised


def test_refuses_what_cannot_be_fetched() -> None:
    with pytest.raises(InvalidURL):
        cache_url("ftp://example.com/")


_segment = st.text("abcXYZ019-._~%20é/", max_size=12)
_params = st.lists(
    st.tuples(st.text("abcz", min_size=1, max_size=3), st.text("xyz 19+&=", max_size=4)),
    max_size=5,
)


@given(path=_segment, params=_params, fragment=st.text("abc", max_size=4))
def test_normal_form_is_a_fixed_point_and_ignores_param_order(
    path: str, params: list[tuple[str, str]], fragment: str
) -> None:
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in params)
    url = f"HTTP://Example.com:80/{quote(path, safe='/%')}?{query}#{fragment}"
    once = cache_url(url)
    assert cache_url(once) == once
    shuffled = "&".join(f"{quote(k)}={quote(v)}" for k, v in reversed(params))
    by_name = sorted(params, key=lambda kv: kv[0])
    if [k for k, _ in by_name] == sorted({k for k, _ in params}) or len(params) < 2:
        # names unique (or nothing to shuffle): the order given never matters
        assert cache_url(f"http://example.com/{quote(path, safe='/%')}?{shuffled}") == once


def test_the_key_ignores_what_only_changes_the_output() -> None:
    base = FetchOptions()
    other = replace(
        base,
        formats=["markdown", "links"],
        only_main_content=False,
        extract='{"t":"h1"}',
        max_age_s=60,
        timeout_s=5.0,
        max_body_bytes=1000,
    )
    url = "http://example.com/a?x=1&b=2"
    assert cache_key(url, base) == cache_key(url, other)
    assert cache_key(url, base) == cache_key("HTTP://EXAMPLE.com:80/a?b=2&x=1#top", base)


@pytest.mark.parametrize(
    "change",
    [
        {"headers": {"Cookie": "a=1"}},
        {"wait_until": "networkidle"},
        {"wait_for": "#app"},
        {"block_resources": ["image"]},
        {"screenshot": "full"},
        {"session_id": "s"},
        {"egress_pool": "eu"},
    ],
)
def test_the_key_changes_with_what_changes_the_fetch(change: dict[str, object]) -> None:
    url = "http://example.com/"
    assert cache_key(url, FetchOptions()) != cache_key(url, replace(FetchOptions(), **change))


def test_header_names_ignore_case_in_the_key() -> None:
    a = replace(FetchOptions(), headers={"Accept-Language": "fr"})
    b = replace(FetchOptions(), headers={"accept-language": "fr"})
    assert cache_key("http://example.com/", a) == cache_key("http://example.com/", b)


def test_only_fetches_without_headers_or_session_are_shareable() -> None:
    assert shareable(FetchOptions())
    assert not shareable(replace(FetchOptions(), headers={"Authorization": "Bearer x"}))
    assert not shareable(replace(FetchOptions(), session_id="s"))
