"""Egress pool health: cooldowns, recovery, breakers, sticky sessions, no credentials in text."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from schemas import ErrorCode
from streams.errors import TransientError
from streams.fetchers.base import FetchRequest, FetchResponse
from streams.fetchers.egress import EgressConfig, EgressFetcher, EgressPools, NoProxyAvailable

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pools(clock: Clock, urls: list[str], **cfg: float) -> EgressPools:
    config = EgressConfig(
        pools={"dc": [SecretStr(u) for u in urls]}, tier_defaults={"http": "dc"}, **cfg
    )  # type: ignore[arg-type]
    return EgressPools(config, clock)


def test_round_robin_and_pool_selection() -> None:
    p = pools(Clock(), ["http://a:1", "http://b:1"])
    assert p.pool_for("http", None) == "dc" and p.pool_for("browser", None) is None
    with pytest.raises(KeyError):
        p.pool_for("http", "residential")
    assert {p.choose("dc").label for _ in range(4)} == {"http://a:1", "http://b:1"}


def test_failing_proxy_cools_down_doubles_and_recovers() -> None:
    clock = Clock()
    p = pools(clock, ["http://a:1", "http://b:1"], failures_to_cooldown=2, cooldown_s=10)
    a = next(x for x in p.all_proxies() if x.label == "http://a:1")
    p.report(a, ok=False)
    p.report(a, ok=False)  # benched for 10 s
    assert all(p.choose("dc") is not a for _ in range(5))
    clock.now = 11  # half-open: one trial
    p.report(a, ok=False)  # relapse: 20 s
    assert a.cooldown_s == 20
    clock.now = 32
    p.report(a, ok=True)  # recovered
    assert a.cooldown_s == 0 and a in {p.choose("dc") for _ in range(4)}


def test_all_benched_raises_and_breaker_skips_a_provider() -> None:
    clock = Clock()
    p = pools(
        clock,
        ["http://u:p@prov:1", "http://u:p@prov:2"],
        failures_to_cooldown=100,
        breaker_open_s=30,
        breaker_failure_ratio=0.8,
    )
    proxies = p.all_proxies()
    for i in range(5):
        p.report(proxies[i % 2], ok=False)
    with pytest.raises(NoProxyAvailable):
        p.choose("dc")
    clock.now = 31
    assert p.choose("dc") in proxies


def test_sticky_sessions_keep_their_proxy_while_healthy() -> None:
    clock = Clock()
    p = pools(clock, ["http://a:1", "http://b:1", "http://c:1"], failures_to_cooldown=1)
    first = p.choose("dc", session_id="s-1")
    assert all(p.choose("dc", session_id="s-1") is first for _ in range(10))
    p.report(first, ok=False)
    moved = p.choose("dc", session_id="s-1")
    assert moved is not first
    assert all(p.choose("dc", session_id="s-1") is moved for _ in range(5))


def test_credentials_never_appear_in_labels_or_repr() -> None:
    p = pools(Clock(), ["http://user:s3cr3t@proxy.example:3128"])
    (proxy,) = p.all_proxies()
    assert "s3cr3t" not in proxy.label + repr(proxy) + str(proxy)
    assert proxy.label == "http://proxy.example:3128"


class _TimesOut:
    def __init__(self) -> None:
        self.calls = 0

    async def fetch(self, request: FetchRequest) -> FetchResponse:
        self.calls += 1
        raise TransientError(ErrorCode.TIMEOUT, f"no answer within {request.timeout_s}s")


@pytest.mark.parametrize(
    ("timeout_s", "benched"), [(0.05, False), (None, True), (30.0, True), (60.0, True)]
)
async def test_timeouts_under_a_deadline_the_job_chose_do_not_bench_a_shared_proxy(
    timeout_s: float | None, benched: bool
) -> None:
    """One tenant's 50 ms deadlines say nothing about the proxy: they must not take it away
    from everyone else (no usable proxy). Timeouts under the deployment's own deadline do."""
    p = pools(Clock(), ["http://a:1"], failures_to_cooldown=2)
    fetcher = EgressFetcher(_TimesOut(), p, "http", default_timeout_s=30.0)
    for _ in range(5):
        with pytest.raises(TransientError):
            await fetcher.fetch(FetchRequest(url="http://example.com/", timeout_s=timeout_s))
    if benched:
        with pytest.raises(NoProxyAvailable):
            p.choose("dc")
    else:
        assert p.choose("dc").label == "http://a:1"
