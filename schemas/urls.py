"""What a valid job URL is. Shared by the gateway (400 at the door) and the workers (for jobs
published straight to Kafka)."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit

import idna

MAX_URL_LENGTH = 8192
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Unicode whitespace (what str.isspace calls whitespace) and the C0, DEL and C1 controls.
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # the only code points UTF-8 cannot encode
_IPV4_PART = {
    10: re.compile(r"[0-9]+"),
    8: re.compile(r"[0-7]+"),
    16: re.compile(r"[0-9a-fA-F]+"),
}


class InvalidURL(ValueError):
    """The URL cannot be fetched; the message says what to fix."""


def validate_url(url: str) -> str:
    """Return the normalised URL (IDNA host, lower-case scheme and host) or raise InvalidURL.

    Rules: http or https only; no userinfo; a host that is an IP literal or a DNS name of valid
    labels; a port in range; at most 8192 characters; no whitespace or control characters, and
    only text UTF-8 can encode (no lone surrogates).

    A host ending in a number is an IPv4 address in any spelling the WHATWG URL standard (and so
    browsers) and ``inet_aton`` accept (``127.1``, ``2130706433``, ``0x7f.0.0.1``,
    ``0177.0.0.1``): it is rewritten to its dotted quad, so the SSRF guard and the HTTP client
    see the address it means; one that spells no address (``1.2.3.256``) is refused.
    """
    if not isinstance(url, str) or not url:
        raise InvalidURL("url is required")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURL(f"url is longer than {MAX_URL_LENGTH} characters")
    if _SPACE_OR_CONTROL.search(url):
        raise InvalidURL("url contains whitespace or control characters")
    if _SURROGATE.search(url):
        raise InvalidURL("url is not valid Unicode (a lone surrogate, which UTF-8 cannot encode)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"url cannot be parsed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidURL("url scheme must be http or https")
    if parts.username is not None or parts.password is not None:
        raise InvalidURL("url must not contain user:password@")
    host = parts.hostname
    if not host:
        raise InvalidURL("url has no host")
    host = _normalise_host(host.rstrip("."))
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        if port == 0:
            raise InvalidURL("url port must be 1-65535")
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def parse_ipv4_host(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address an ASCII host spells if it ends in a number, else None (a name).

    The WHATWG URL standard's IPv4 parser, which browsers use and which accepts every spelling
    glibc's ``inet_aton`` does: one to four dot-separated parts, each decimal, ``0x`` hex or
    ``0``-prefixed octal, the last filling the remaining bytes (``127.1``, ``2130706433``,
    ``0x7f000001``, ``0177.0.0.1``, ``127.0.1``), one trailing dot allowed. Raises
    :class:`InvalidURL` when the host ends in a number but spells no address (``1.2.3.256``,
    ``1.2.3.4.5``, ``09``): such a host is never looked up as a name.
    """
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    last = parts[-1]
    if not (last.isascii() and last.isdigit()) and _ipv4_number(last) is None:
        return None  # a name: its last label is not a number
    numbers: list[int] = []
    for part in parts if len(parts) <= 4 else ():
        number = _ipv4_number(part)
        if number is None:
            break
        numbers.append(number)
    if len(numbers) != len(parts):
        raise InvalidURL(f"url host {host!r} ends in a number but is not an IPv4 address")
    *head, tail = numbers
    if any(n > 255 for n in head) or tail >= 256 ** (4 - len(head)):
        raise InvalidURL(f"url host {host!r} is an IPv4 address out of range")
    value = tail
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _ipv4_number(part: str) -> int | None:
    """One part of an IPv4 host (WHATWG "IPv4 number parser"), or None if it is not one."""
    if not part:
        return None
    radix = 10
    if part[:2] in ("0x", "0X"):
        part, radix = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        part, radix = part[1:], 8
    if not part:
        return 0  # "0x" alone
    if not _IPV4_PART[radix].fullmatch(part):
        return None
    part = part.lstrip("0") or "0"
    if len(part) > 12:  # far above 2**32 in any radix; keeps int() off 8,000-digit strings
        return 2**32
    return int(part, radix)


@lru_cache(maxsize=65536)
def _normalise_host(host: str) -> str:
    """IDNA-encoded, lower-case host, or an IP address in its canonical form (memoised: ~17 us
    for a name, and hosts repeat)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if host.isascii() and (ipv4 := parse_ipv4_host(host)) is not None:
        return str(ipv4)
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidURL(f"url host {host!r} is not a valid domain name: {exc}") from exc
    if (ipv4 := parse_ipv4_host(ascii_host)) is not None:  # e.g. full-width digits, mapped
        return str(ipv4)
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise InvalidURL(f"url host {host!r} is not a valid domain name")
    return ascii_host
