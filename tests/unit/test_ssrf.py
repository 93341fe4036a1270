"""The SSRF guard's pure decisions."""

from __future__ import annotations

import ipaddress

import pytest

from schemas import ErrorCode
from streams.fetchers.ssrf import EgressGuard, SSRFBlocked, embedded_ipv4, why_not_public

pytestmark = pytest.mark.unit

NOT_PUBLIC = [
    "127.0.0.1",
    "127.255.255.254",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.100.100.200",  # Alibaba metadata
    "192.0.0.192",
    "100.64.0.1",  # CGNAT
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata, IPv6
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254 — ipaddress calls this global
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b:1::a00:1",  # local-use NAT64 prefix
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo with client 127.0.0.1 (obfuscated)
    "ff02::1",
    "2001:db8::1",
    "3fff::1",  # documentation (RFC 9637), which ipaddress calls global
    "3fff:fff:ffff::1",
    "fec0::1",  # deprecated site-local, which ipaddress calls global
    "feff::1",
    "::ffff:0:7f00:1",  # SIIT IPv4-translated 127.0.0.1, which ipaddress calls global
    "::ffff:0:a9fe:a9fe",  # SIIT of 169.254.169.254
    "::ffff:0:a00:1",  # SIIT of 10.0.0.1
]

PUBLIC = [
    "93.184.216.34",
    "8.8.8.8",
    "2606:4700:4700::1111",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "::ffff:0:808:808",  # SIIT of a public address: judged by that address, as NAT64 is
    "3fff:1000::1",  # just past 3fff::/20
]


@pytest.mark.parametrize("ip", NOT_PUBLIC)
def test_not_public_addresses_are_refused(ip: str) -> None:
    assert why_not_public(ipaddress.ip_address(ip)) is not None


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass(ip: str) -> None:
    assert why_not_public(ipaddress.ip_address(ip)) is None


def test_python_is_global_alone_would_be_fooled() -> None:
    # The reason the guard unwraps: the standard library calls this NAT64 address global.
    assert ipaddress.ip_address("64:ff9b::a9fe:a9fe").is_global
    assert embedded_ipv4(ipaddress.ip_address("64:ff9b::a9fe:a9fe")) == [
        ipaddress.IPv4Address("169.254.169.254")
    ]


def test_siit_addresses_are_unwrapped() -> None:
    assert embedded_ipv4(ipaddress.ip_address("::ffff:0:7f00:1")) == [
        ipaddress.IPv4Address("127.0.0.1")
    ]
    assert embedded_ipv4(ipaddress.ip_address("::ffff:7f00:1")) == [  # IPv4-mapped, as before
        ipaddress.IPv4Address("127.0.0.1")
    ]


def test_guard_allows_only_exact_host_port_pairs() -> None:
    guard = EgressGuard(["127.0.0.1:8080", "[::1]:443"])
    guard.check_ip("127.0.0.1", ipaddress.ip_address("127.0.0.1"), 8080)
    guard.check_ip("::1", ipaddress.ip_address("::1"), 443)
    with pytest.raises(SSRFBlocked) as info:
        guard.check_ip("127.0.0.1", ipaddress.ip_address("127.0.0.1"), 8081)
    assert info.value.code is ErrorCode.SSRF_BLOCKED
    assert "loopback" in info.value.message


async def test_default_guard_blocks_loopback_literal_and_names() -> None:
    guard = EgressGuard()
    for host in (
        "127.0.0.1",
        "[::1]",
        "localhost",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "127.1.",
        "[::ffff:0:7f00:1]",
    ):
        with pytest.raises(SSRFBlocked):
            await guard.resolve(host, 80)
