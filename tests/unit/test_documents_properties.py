"""documents.derive on any input: never raises, valid UTF-8 out, JSON that parses, absolute
http(s) links, bounded on hostile pages."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from documents import decode_html, derive
from documents._tree import LONG_TAG_CHARS, MAX_TAG_TOKENS, _limit_attributes
from schemas.extract import parse_extract_rules
from schemas.formats import DERIVED_FORMATS

pytestmark = pytest.mark.unit

ALL = [f.value for f in DERIVED_FORMATS]
RULES = parse_extract_rules(
    {
        "title": "h1",
        "links": {"css": "a", "attr": "href", "all": True},
        "price": {"css": ".price", "type": "number"},
        "items": {
            "xpath": "//li",
            "all": True,
            "fields": {"t": "b", "h": {"css": "a", "type": "html"}},
        },
        "count": {"xpath": "count(//a)"},
    }
)

_tags = st.sampled_from(
    ["a", "p", "div", "li", "ul", "table", "tr", "td", "script", "base", "meta", "h1", "br", "img"]
)
_attrs = st.sampled_from(
    [' href="/x"', " href=javascript:x", ' href="#f"', " href=http://[::1", ' href="//h/p"',
     ' class="price"', ' property="og:title" content="x"', ' charset="bogus"', ' id="app"',
     ' src="a.png"', ' type="application/ld+json"', ' rel="nofollow  NoOpener"', ""]
)  # fmt: skip
_text = st.text(max_size=20) | st.sampled_from(["€ 1.299,00", '{"a": NaN}', "\udcff", "&amp;"])
_fragment = st.lists(
    st.tuples(_tags, _attrs, _text).map(lambda t: f"<{t[0]}{t[1]}>{t[2]}")
    | st.sampled_from(["</div>", "</a>", "</ul>", "<!--", "-->", "<![CDATA[", "\x00"]),
    max_size=40,
).map("".join)
_content_types = st.sampled_from(
    [None, "text/html", "text/html; charset=shift_jis", "text/html; charset=nope",
     "application/json", "text/plain; charset=utf-16", "image/png", "application/xhtml+xml"]
)  # fmt: skip


def _check(docs: dict[str, bytes]) -> None:
    assert set(docs) == set(ALL)
    for name, data in docs.items():
        text = data.decode("utf-8")  # valid UTF-8 or this raises
        if name in ("links", "metadata", "extract"):
            json.loads(text)
    for link in json.loads(docs["links"]):
        assert link["url"].startswith(("http://", "https://"))
        assert "#" not in link["url"]
    meta = json.loads(docs["metadata"])
    assert meta["status"] == 200 and meta["final_url"] == "https://example.com/a/b"


def _derive(body: bytes, content_type: str | None = "text/html") -> dict[str, bytes]:
    return derive(
        body,
        content_type=content_type,
        url="https://example.com/a/b",
        status=200,
        headers={"Content-Type": content_type or "", "X-Caf\udce9": "v"},
        formats=[*ALL, "html", "screenshot"],
        extract=RULES,
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), _content_types)
def test_any_bytes(body: bytes, content_type: str | None) -> None:
    _check(_derive(body, content_type))


@settings(max_examples=300, deadline=None)
@given(_fragment, _content_types, st.sampled_from(["utf-8", "cp1251", "utf-16", "shift_jis"]))
def test_html_like_input(html: str, content_type: str | None, encoding: str) -> None:
    codec_errors = "surrogatepass" if encoding.startswith("utf") else "replace"
    _check(_derive(html.encode(encoding, codec_errors), content_type))


@given(
    st.binary(max_size=500), st.sampled_from([None, "text/html; charset=koi8-r", "x;charset=rot13"])
)
def test_decode_html_never_raises(body: bytes, content_type: str | None) -> None:
    text, charset = decode_html(body, content_type)
    assert isinstance(text, str) and charset


def test_only_derived_formats_are_returned() -> None:
    assert _derive(b"<p>x</p>").keys() == set(ALL)
    assert (
        derive(
            b"<p>x</p>",
            content_type=None,
            url="http://e/",
            status=200,
            headers={},
            formats=["html"],
        )
        == {}
    )


def _timed(body: bytes) -> tuple[dict[str, bytes], float]:
    start = time.process_time()
    docs = _derive(body)
    return docs, time.process_time() - start


def test_deep_nesting() -> None:
    docs, seconds = _timed(b"<div>" * 10_000 + b"deep" + b"</div>" * 10_000)
    _check(docs)
    assert seconds < 2


def test_many_links() -> None:
    body = "".join(f'<a href="/p{i % 50_000}">link {i}</a>' for i in range(100_000)).encode()
    docs, seconds = _timed(b"<body>" + body)
    _check(docs)
    assert len(json.loads(docs["links"])) == 50_000
    assert seconds < 10


def test_many_attributes() -> None:
    attrs = " ".join(f"data-a{i}=x" for i in range(100_000))
    docs, seconds = _timed(f"<body><p {attrs}>text</p>".encode())
    _check(docs)
    assert docs["text"] == b"text\n"
    assert seconds < 5


def test_input_is_capped() -> None:
    docs, _ = _timed(b"<body><p>" + b"word " * 3_000_000 + b"<p>after the cap</p>")
    _check(docs)
    assert b"after the cap" not in docs["text"]


def test_binary_garbage_and_nul() -> None:
    _check(_derive(bytes(range(256)) * 100))
    docs = _derive(b"<p>a\x00b</p>")
    assert docs["text"] == b"ab\n"


def test_non_html_content_types() -> None:
    docs = _derive(b'{"a": [1, 2]}', "application/json")
    assert docs["text"] == docs["markdown"] == b'{"a": [1, 2]}'
    assert json.loads(docs["links"]) == []
    meta = json.loads(docs["metadata"])
    assert meta["content_type"] == "application/json" and meta["charset"] == "utf-8"
    assert meta["title"] is None and meta["headers"]["Content-Type"] == "application/json"
    assert json.loads(docs["extract"])["links"] == []
    docs = _derive(b"just text <b>not html</b>", "text/plain")
    assert docs["text"] == b"just text <b>not html</b>"
    assert docs["clean_html"] == b"<pre>just text &lt;b&gt;not html&lt;/b&gt;</pre>"
    docs = _derive(b"\x89PNG\r\n\x1a\n....", "image/png")
    assert docs["text"] == b"" and json.loads(docs["metadata"])["status"] == 200


def _limit_attributes_reference(text: str) -> str:
    """The attribute cut without the fast pre-check: every segment looked at."""
    segments = text.split(">")
    for i, segment in enumerate(segments):
        start = segment.rfind("<")
        tag = segment[start:] if start >= 0 else ""
        if len(tag) > LONG_TAG_CHARS:
            tokens = tag.split(maxsplit=MAX_TAG_TOKENS + 1)
            if len(tokens) > MAX_TAG_TOKENS + 1:
                segments[i] = segment[:start] + tag[: len(tag) - len(tokens[-1])]
    return ">".join(segments)


_pieces = st.sampled_from(["<", ">", " ", "a", "<p", "</p>", ' b="<x>"', " a=1" * 300, "w" * 700])


@given(st.lists(_pieces, max_size=60).map("".join))
@settings(max_examples=300, deadline=None)
def test_the_attribute_cut_skips_only_pages_it_would_not_change(text: str) -> None:
    assert _limit_attributes(text) == _limit_attributes_reference(text)
