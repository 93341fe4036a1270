"""IPv4 hosts in numeric spellings (``127.1``, ``2130706433``, ``0x7f.1``, ``0177.0.0.1``): the
project reads them itself, as browsers and ``inet_aton`` do, whatever the HTTP library accepts.

Generated spellings are checked against the C library's ``inet_aton`` (what ``getaddrinfo``
and most HTTP stacks use), so a spelling the system would connect to is never judged as
another address or as a name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from schemas import ErrorCode
from schemas.urls import InvalidURL, parse_ipv4_host, validate_url
from streams.errors import FatalError
from streams.fetchers.ssrf import EgressGuard, SSRFBlocked, ip_literal

pytestmark = pytest.mark.unit


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


@st.composite
def _number(draw: st.DrawFn, value: int) -> str:
    """``value`` as one part of an IPv4 host: decimal, 0-octal or 0x-hex, maybe zero-padded."""
    radix = draw(st.sampled_from(["dec", "oct", "hex"]))
    if radix == "dec":
        return str(value)
    pad = "0" * draw(st.integers(0, 3))
    if radix == "oct":
        return "0" + pad + format(value, "o")
    digits = format(value, draw(st.sampled_from(["x", "X"])))
    return draw(st.sampled_from(["0x", "0X"])) + pad + digits


@st.composite
def _spelling(draw: st.DrawFn, address: int) -> str:
    """One of the spellings of ``address``: 1-4 parts, the last holding the remaining bytes."""
    parts = draw(st.integers(1, 4))
    head = [(address >> (8 * (3 - i))) & 0xFF for i in range(parts - 1)]
    tail = address & ((1 << (8 * (5 - parts))) - 1)
    return ".".join([*(draw(_number(n)) for n in head), draw(_number(tail))])


@st.composite
def _any_spelling(draw: st.DrawFn) -> tuple[int, str]:
    address = draw(st.integers(0, 2**32 - 1))
    return address, draw(_spelling(address))


_NOT_PUBLIC_V4 = [
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "0.0.0.0/8",
        "100.100.100.200/32",
        "192.0.0.0/24",
    )
]


@st.composite
def _not_public_spelling(draw: st.DrawFn) -> tuple[ipaddress.IPv4Address, str]:
    net = draw(st.sampled_from(_NOT_PUBLIC_V4))
    address = int(net.network_address) + draw(st.integers(0, net.num_addresses - 1))
    return ipaddress.IPv4Address(address), draw(_spelling(address))


@given(_any_spelling())
@example((2130706433, "127.1"))
@example((2130706433, "0x7f.1"))
@example((2130706433, "0177.0.0.1"))
@example((2130706433, "127.0.1"))
@example((2130706433, "0x7f000001"))
@example((2130706433, "2130706433"))
@example((134744072, "134744072"))
def test_every_numeric_spelling_means_what_inet_aton_says(case: tuple[int, str]) -> None:
    address, spelling = case
    expected = ipaddress.IPv4Address(address)
    assert _inet_aton(spelling) == expected  # the generator spells what the system reads
    assert parse_ipv4_host(spelling) == expected
    assert parse_ipv4_host(spelling + ".") == expected  # one trailing dot, as the URL standard
    assert ip_literal(spelling) == expected
    assert validate_url(f"http://{spelling}:8080/p?q") == f"http://{expected}:8080/p?q"


@given(st.text(alphabet="0123456789abcdefxX.", max_size=24))
@example("0x")
@example("0x.1")
@example("1.0x")
@example("08")
@example("1..1")
@example("4294967296")
@example("0x100000000")
@example("256.1")
@example("1.16777216")
def test_no_string_is_read_differently_from_inet_aton(text: str) -> None:
    """Whatever ``inet_aton`` accepts, we read as the same address. We accept a few strings it
    refuses, as the URL standard does (a bare ``0x`` part is 0): never as a name."""
    theirs = _inet_aton(text)
    ours: ipaddress.IPv4Address | str | None
    try:
        ours = parse_ipv4_host(text)
    except InvalidURL:
        ours = "refused"
    if theirs is not None:
        assert ours == theirs


@given(_not_public_spelling())
def test_every_spelling_of_a_private_address_is_refused(
    case: tuple[ipaddress.IPv4Address, str],
) -> None:
    address, spelling = case
    assert _inet_aton(spelling) == address
    url = validate_url(f"http://{spelling}/")
    assert url == f"http://{address}/"
    guard = EgressGuard()
    for host in (spelling, str(address)):
        with pytest.raises(SSRFBlocked):
            asyncio.run(guard.resolve(host, 80))


async def test_allowing_a_private_address_allows_its_other_spellings() -> None:
    guard = EgressGuard(["127.0.0.1:8080"])
    for host in ("127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "127.1."):
        assert await guard.resolve(host, 8080) == [(socket.AF_INET, "127.0.0.1")]
        with pytest.raises(SSRFBlocked):
            await guard.resolve(host, 8081)


async def test_a_public_numeric_spelling_is_fetched_as_its_dotted_quad() -> None:
    assert validate_url("http://134744072/") == "http://8.8.8.8/"
    assert await EgressGuard().resolve("134744072", 443) == [(socket.AF_INET, "8.8.8.8")]


@pytest.mark.parametrize(
    "host", ["1.2.3.256", "1.2.3.4.5", "09", "0.0.08", "example.0x10", "4294967296", "256.1"]
)
async def test_a_host_ending_in_a_number_that_is_no_address_is_refused(host: str) -> None:
    with pytest.raises(InvalidURL, match="IPv4"):
        validate_url(f"http://{host}/")
    # The guard refuses it too, without a DNS lookup (which could read it either way).
    with pytest.raises(FatalError) as info:
        await EgressGuard().resolve(host, 80)
    assert info.value.code is ErrorCode.INVALID_URL


def test_names_are_not_numbers() -> None:
    for host in ("example.com", "1.2.3.example", "0x7f.example", "10a", "0x1g", "localhost"):
        assert parse_ipv4_host(host) is None
        assert ip_literal(host) is None
