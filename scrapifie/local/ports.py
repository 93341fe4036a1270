"""Local TCP port helpers."""

from __future__ import annotations

import socket

__all__ = ["free_port", "port_accepts"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free when this function checked it.

    The port is found by binding to port 0 and closing the socket again, so another process can
    take it before the caller binds it; that race is acceptable for local test services.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` (within 0.5 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
