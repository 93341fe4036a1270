"""schemas.keys: partition keys by registrable domain, deterministic ids and object keys."""

from __future__ import annotations

import re
import uuid

import pytest

from schemas.keys import content_object_key, derived_id, site_key

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/", "example.com"),
        ("http://a.b.c.example.com/x?y=z", "example.com"),
        ("https://www.example.co.uk/", "example.co.uk"),
        ("https://a.b.example.co.uk/", "example.co.uk"),
        ("http://shop.example.com.au/", "example.com.au"),
        ("http://example.co.uk/", "example.co.uk"),
        ("https://WWW.Example.COM/", "example.com"),
        ("http://example.com:8080/", "example.com"),
        ("http://www.example.com.:443/", "example.com"),
        ("http://example.com./", "example.com"),
        ("http://192.168.1.10:8080/path", "192.168.1.10"),
        ("http://10.0.0.1/", "10.0.0.1"),
        ("http://[2001:DB8::1]:8443/", "2001:db8::1"),
        ("http://[::1]/", "::1"),
        ("http://localhost:3000/", "localhost"),
        ("http://xn--bcher-kva.example/", "xn--bcher-kva.example"),
        # No URL at all: the empty site, never an exception (keying comes before validation).
        ("http://[::1", ""),
        ("http://[not-an-ip]/", ""),
        ("", ""),
    ],
)
def test_site_key(url: str, expected: str) -> None:
    assert site_key(url) == expected


def test_site_key_subdomains_share_a_key_and_sibling_domains_do_not() -> None:
    assert site_key("http://a.example.co.uk/") == site_key("https://b.c.example.co.uk:8443/")
    assert site_key("http://example.co.uk/") != site_key("http://example2.co.uk/")
    assert site_key("http://example.co.uk/") != site_key("http://example.com/")


def test_site_key_ip_literals_are_not_split_into_labels() -> None:
    # a naive eTLD+1 would give "1.10" for 192.168.1.10
    assert site_key("http://192.168.1.10/") != site_key("http://172.16.1.10/")


@pytest.mark.parametrize("url", ["", "not a url", "http:///path", "/relative/only"])
def test_site_key_without_host_is_empty(url: str) -> None:
    assert site_key(url) == ""


def test_derived_id_is_deterministic_uuid5() -> None:
    a = derived_id("job-1", "result", "http", "1")
    assert a == derived_id("job-1", "result", "http", "1")
    parsed = uuid.UUID(a)
    assert parsed.version == 5
    assert str(parsed) == a


@pytest.mark.parametrize(
    "parts",
    [("acme", "job-1", "result", "http", "1"), ("", ""), ("tenänt €", "ü\x1fv"), ("x" * 500,)],
)
def test_derived_id_is_exactly_uuid5_of_the_joined_parts(parts: tuple[str, ...]) -> None:
    # Ids already on topics and in tables were made by uuid.uuid5: the fast path must not move.
    namespace = uuid.UUID("8d0c7e8a-3a57-4b53-9b7e-5c1f0c2a9e11")
    assert derived_id(*parts) == str(uuid.uuid5(namespace, "\x1f".join(parts)))


@pytest.mark.parametrize(
    "other",
    [
        ("job-1", "result", "http", "2"),
        ("job-1", "metering", "http", "1"),
        ("job-2", "result", "http", "1"),
        ("job-1", "result", "browser", "1"),
        ("job-1result", "http", "1"),
        ("job-1", "result", "http1"),
    ],
)
def test_derived_id_differs_for_different_parts(other: tuple[str, ...]) -> None:
    assert derived_id("job-1", "result", "http", "1") != derived_id(*other)


def test_content_object_key_shape() -> None:
    job_id = "9f1c2d3e-0000-4000-8000-000000000001"
    key = content_object_key("acme", job_id)
    assert key == f"content/acme/9f/{job_id}.html.gz"
    assert key == content_object_key("acme", job_id)
    assert content_object_key("other", job_id) != key
    assert re.fullmatch(r"content/[^/]+/[^/]{2}/[^/]+\.html\.gz", key)
