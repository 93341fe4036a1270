"""The SSRF guard: only globally routable addresses are fetched, unless explicitly allowed.

Rules (PITFALLS.md, "SSRF"):
- resolve the host and reject if ANY answer is not public, then connect to those same answers
  (the aiohttp resolver in ``fetchers/transport.py`` returns exactly the checked addresses, so
  there is no second lookup for DNS rebinding to exploit);
- an IPv4 host in any numeric spelling (``127.1``, ``2130706433``, ``0x7f.1``) is the address it
  spells (:func:`schemas.urls.parse_ipv4_host`, the URL standard's parser, a superset of
  ``inet_aton``), judged here rather than left to the HTTP library or the system resolver;
- unwrap IPv6 forms that embed an IPv4 address (IPv4-mapped, SIIT IPv4-translated
  ``::ffff:0:0:0/96``, IPv4-compatible, 6to4, Teredo, NAT64 ``64:ff9b::/96`` and
  ``64:ff9b:1::/48``) and judge the embedded address too;
- never trust ``is_global`` alone: cloud metadata addresses and a few special ranges are
  blocked explicitly (Python's ``ipaddress`` calls e.g. ``fec0::/10`` and ``3fff::/20`` global);
- private targets are reachable only through an allowlist of exact ``host:port`` pairs (tests,
  private deployments). There is no blanket switch.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Iterable

from schemas import ErrorCode
from schemas.urls import InvalidURL, parse_ipv4_host
from streams.errors import FatalError, TransientError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_BLOCKED_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "169.254.0.0/16",  # link-local, incl. 169.254.169.254 (AWS/GCP/Azure metadata)
        "192.0.0.0/24",  # IETF protocol assignments (192.0.0.192: Oracle metadata)
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",  # site-local, deprecated (RFC 3879) but still routed inside some sites
        "ff00::/8",
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
    )
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")  # IPv4-translated (RFC 2765, RFC 7915)
_6TO4 = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")


class SSRFBlocked(FatalError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.SSRF_BLOCKED, message)


@functools.lru_cache(maxsize=4096)
def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` (bracketed or not) spells, or None if it is a name. IPv4 counts in
    every numeric spelling, canonical or not (``127.1`` is 127.0.0.1). Memoised: every request
    to an IP-literal host asks, and parsing one costs ~3 us."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    try:
        return parse_ipv4_host(bare)
    except InvalidURL:
        return None  # ends in a number yet spells no address: resolve() refuses it


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (and would reach through a translator)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    packed = ip.packed
    if ip in _SIIT:
        found.append(ipaddress.IPv4Address(packed[12:]))
    if packed[:12] == bytes(12) and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        found.append(ipaddress.IPv4Address(packed[12:]))
    if ip in _6TO4:
        found.append(ipaddress.IPv4Address(packed[2:6]))
    if ip in _TEREDO:
        server, client = ip.teredo or (None, None)
        found += [a for a in (server, client) if a is not None]
    if any(ip in net for net in _NAT64):
        found.append(ipaddress.IPv4Address(packed[12:]))
    return found


@functools.lru_cache(maxsize=4096)
def why_not_public(ip: IPAddress) -> str | None:
    """None when ``ip`` is a public unicast address; else the reason it is not. Cached: the
    answer depends on the address alone, and it costs ~50 network-membership tests, on every
    request and redirect hop, for the few addresses a worker keeps connecting to."""
    for candidate in (ip, *embedded_ipv4(ip)):
        if candidate.is_loopback:
            return f"{ip} is loopback"
        if candidate.is_private:
            return f"{ip} is a private address"
        for net in _BLOCKED_NETS:
            if candidate.version == net.version and candidate in net:
                return f"{ip} is in blocked range {net}"
        if not candidate.is_global or candidate.is_multicast or candidate.is_unspecified:
            return f"{ip} is not globally routable"
    return None


class EgressGuard:
    """Decides which addresses may be fetched. ``allow`` holds exact ``host:port`` exceptions
    (IP literals or names as written in URLs, e.g. ``127.0.0.1:8080``, ``[::1]:443``)."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self._allow = frozenset(a.strip().lower() for a in allow if a.strip())

    def allowed(self, host: str, port: int) -> bool:
        host = host.strip("[]").lower()
        literal = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return literal in self._allow

    def check_ip(self, host: str, ip: IPAddress, port: int) -> None:
        """Raise SSRFBlocked unless ``ip`` is public or ``host:port`` (or ``ip:port``) allowed."""
        reason = why_not_public(ip)
        if reason is None or self.allowed(host, port) or self.allowed(str(ip), port):
            return
        raise SSRFBlocked(f"refusing to fetch {host}:{port}: {reason}")

    async def resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """Resolve ``host`` and check every answer; return (family, address) to connect to."""
        literal = ip_literal(host)
        if literal is not None:
            self.check_ip(host, literal, port)
            return [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, str(literal))]
        try:
            parse_ipv4_host(host)  # a host ending in a number is an address or nothing
        except InvalidURL as exc:
            raise FatalError(ErrorCode.INVALID_URL, str(exc)) from exc
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                raise FatalError(ErrorCode.DNS_ERROR, f"host not found: {host}") from exc
            raise TransientError(
                ErrorCode.DNS_ERROR, f"DNS lookup of {host} failed: {exc}"
            ) from exc
        answers: list[tuple[int, str]] = []
        for family, _type, _proto, _name, sockaddr in infos:
            address = str(sockaddr[0]).split("%", 1)[0]
            self.check_ip(host, ipaddress.ip_address(address), port)
            if (family, address) not in answers:
                answers.append((family, address))
        if not answers:
            raise FatalError(ErrorCode.DNS_ERROR, f"host {host} has no addresses")
        return answers
