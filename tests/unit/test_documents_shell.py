"""documents.shell.looks_like_js_shell: empty app shells, however the markup is spelled."""

from __future__ import annotations

import pytest

from documents import looks_like_js_shell

pytestmark = pytest.mark.unit

ARTICLE = " ".join(["This is a real article paragraph with plenty of words."] * 10)


@pytest.mark.parametrize(
    "html",
    [
        '<html><body><div id="root"></div><script src="/app.js"></script></body></html>',
        "<html><body><div id=app></div></body></html>",
        "<HTML><BODY><DIV ID='root'/></BODY></HTML>",
        '<body><div id = "app" ></div></body>',
        '<body><div class="x" data-v="1" id="__next">   \n </div></body>',
        '<body><div id="___gatsby"><div class="spinner"></div></div></body>',
        '<body><div ID="Svelte"></div></body>',
        "<body><noscript>You need to enable JavaScript to run this app.</noscript></body>",
        "<body><p>Please turn on JavaScript.</p></body>",
        "<body><p>JavaScript is required</p></body>",
    ],
)
def test_shells(html: str) -> None:
    assert looks_like_js_shell(html)


@pytest.mark.parametrize(
    "html",
    [
        f'<body><div id="root"></div><article><p>{ARTICLE}</p></article></body>',
        f'<body><div id="app"><p>{ARTICLE}</p></div></body>',
        "<body><p>A short page with no app root.</p></body>",
        '<body><div id="root"><p>Server-rendered text.</p></div></body>',
        '<body><div id="rooted"></div></body>',
        "",
        "\x00\x01binary",
    ],
)
def test_not_shells(html: str) -> None:
    assert not looks_like_js_shell(html)


def test_script_text_is_not_visible_text() -> None:
    script = "<script>" + "var x = 1;" * 100 + "</script>"
    assert looks_like_js_shell(
        f'<body><div id="app"></div>{script}<style>{"a{}" * 300}</style></body>'
    )


def test_threshold_is_a_parameter() -> None:
    html = '<body><div id="app"></div><p>fifty characters of text are here, just about.</p></body>'
    assert looks_like_js_shell(html)
    assert not looks_like_js_shell(html, min_text_chars=10)
