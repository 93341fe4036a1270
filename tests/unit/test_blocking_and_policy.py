"""Block detection table and the retry/escalate/finish decision."""

from __future__ import annotations

import random

import pytest

from schemas import ErrorCode
from streams.fetchers.base import FetchResponse
from streams.tier.blocking import inspect
from streams.tier.outcome import Kind, Outcome, classify_response
from streams.tier.policy import Action, RetryPolicy, decide, next_tier

pytestmark = pytest.mark.unit

ARTICLE = "<html><body><article>" + "Real content about things. " * 40 + "</article></body></html>"
SHELL = (
    '<html><head><script src="/app.js"></script></head><body><div id="root"></div></body></html>'
)
CF = "<html><head><title>Just a moment...</title></head><body>cf-chl-bypass</body></html>"
LOGIN = '<html><form action="/login"><input type="password" name="p"></form></html>'


def page(
    status: int, body: str, url: str = "http://a.test/x", final: str | None = None
) -> FetchResponse:
    return FetchResponse(
        url, final or url, status, {}, body.encode(), "text/html; charset=utf-8", 0
    )


@pytest.mark.parametrize("status", [200, 403, 429, 503])
def test_challenge_pages_are_blocked_whatever_the_status(status: int) -> None:
    outcome = classify_response(page(status, CF))
    assert outcome.kind is Kind.BLOCKED and outcome.marker == "cloudflare_challenge"


def test_captcha_wall_with_200_is_never_success() -> None:
    body = (
        '<html><script src="https://www.google.com/recaptcha/api.js"></script>'
        "verify you are human</html>"
    )
    assert classify_response(page(200, body)).kind is Kind.BLOCKED


def test_js_shell_is_blocked_for_http_only() -> None:
    assert classify_response(page(200, SHELL), "http").marker == "empty_js_shell"
    assert classify_response(page(200, SHELL), "browser").kind is Kind.OK
    assert classify_response(page(200, ARTICLE), "http").kind is Kind.OK


def test_redirect_to_a_login_form_is_a_login_wall() -> None:
    outcome = classify_response(
        page(200, LOGIN, "http://a.test/private", "http://a.test/login?next=/private")
    )
    assert outcome.kind is Kind.BLOCKED and outcome.marker == "redirected_to_login"
    # The login page itself, asked for directly, is content.
    assert classify_response(page(200, LOGIN, "http://a.test/login")).kind is Kind.OK


def test_plain_429_and_503_stay_transient_and_unknown_charset_does_not_crash() -> None:
    assert classify_response(page(429, "slow down")).kind is Kind.TRANSIENT
    assert classify_response(page(503, "maintenance")).kind is Kind.TRANSIENT
    weird = FetchResponse(
        "u", "u", 200, {}, b"\\xff\\xfe caf\\xe9", "text/html; charset=x-bogus", 0
    )
    assert (
        inspect(
            tier="http",
            status=200,
            url="u",
            final_url="u",
            body=weird.body,
            content_type=weird.content_type,
        ).kind
        == "content"
    )


def test_non_html_is_not_scanned_for_markers() -> None:
    resp = FetchResponse("u", "u", 200, {}, b"captcha recaptcha/api.js", "application/json", 0)
    assert classify_response(resp).kind is Kind.OK


POLICY = RetryPolicy(max_attempts=3, base_delay_s=2, max_delay_s=300, jitter=0.5)


def test_transient_retries_with_backoff_then_fails_with_its_code() -> None:
    rng = random.Random(1)
    timeout = Outcome(Kind.TRANSIENT, ErrorCode.TIMEOUT, "slow")
    d1 = decide(timeout, tier="http", tier_attempt=1, max_tier="stealth", policy=POLICY, rng=rng)
    d2 = decide(timeout, tier="http", tier_attempt=2, max_tier="stealth", policy=POLICY, rng=rng)
    d3 = decide(timeout, tier="http", tier_attempt=3, max_tier="stealth", policy=POLICY, rng=rng)
    assert (d1.action, d2.action) == (Action.RETRY, Action.RETRY)
    assert 1 <= d1.delay_s <= 3 and 2 <= d2.delay_s <= 6
    assert (d3.action, d3.code) == (Action.FINISH, ErrorCode.TIMEOUT)


def test_retry_after_wins_over_a_shorter_backoff() -> None:
    o = Outcome(Kind.TRANSIENT, ErrorCode.HTTP_ERROR, "HTTP 429", 429, retry_after_s=40)
    d = decide(o, tier="http", tier_attempt=1, max_tier="http", policy=POLICY, rng=random.Random(0))
    assert d.action is Action.RETRY and d.delay_s == 40


def test_blocked_escalates_up_to_max_tier_then_fails_blocked() -> None:
    blocked = Outcome(Kind.BLOCKED, ErrorCode.BLOCKED, "wall")
    rng = random.Random(0)
    assert (
        decide(
            blocked, tier="http", tier_attempt=1, max_tier="stealth", policy=POLICY, rng=rng
        ).next_tier
        == "browser"
    )
    assert (
        decide(
            blocked, tier="browser", tier_attempt=1, max_tier="stealth", policy=POLICY, rng=rng
        ).next_tier
        == "stealth"
    )
    final = decide(
        blocked, tier="browser", tier_attempt=1, max_tier="browser", policy=POLICY, rng=rng
    )
    assert (final.action, final.code) == (Action.FINISH, ErrorCode.BLOCKED)
    assert next_tier("stealth", "stealth") is None


def test_ok_and_fatal_finish() -> None:
    rng = random.Random(0)
    assert (
        decide(
            Outcome(Kind.OK), tier="http", tier_attempt=1, max_tier="http", policy=POLICY, rng=rng
        ).action
        is Action.FINISH
    )
    fatal = decide(
        Outcome(Kind.FATAL, ErrorCode.TOO_LARGE),
        tier="http",
        tier_attempt=1,
        max_tier="stealth",
        policy=POLICY,
        rng=rng,
    )
    assert (fatal.action, fatal.code) == (Action.FINISH, ErrorCode.TOO_LARGE)


@pytest.mark.parametrize(
    ("html", "shell"),
    [
        ('<body><div id="root"></div><script src="/app.js"></script></body>', True),
        ("<div class='x' id='__next' >\n </div><script src=/a.js></script>", True),
        # However the markup is spelled: unquoted (as minifiers write it), upper case, spaces.
        ("<div id=app></div><script src=/app.js></script>", True),
        ("<DIV ID='ROOT'></DIV><SCRIPT SRC=/app.js></SCRIPT>", True),
        ('<div data-x=1 id = "app" ></div><script>boot()</script>', True),
        ('<div id="root"><p>server-rendered</p></div><script src=/a.js></script>', False),
        ("<noscript>You need to enable JavaScript to run this app.</noscript>", True),
        ("please enable javascript to continue", True),
        ("this site requires javascript", True),
        ("<p>plain article text about javascript frameworks</p>", False),
        ("<div id=app>" + "<p>Server-rendered words of an article.</p>" * 10 + "</div>", False),
    ],
)
def test_js_shells_whatever_the_spelling(html: str, shell: bool) -> None:
    verdict = classify_response(page(200, html), "http")
    assert (verdict.marker == "empty_js_shell") is shell, verdict
