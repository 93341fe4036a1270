"""How the worker stores a body: gzip (ISA-L) + SHA-256, big bodies off the event loop."""

from __future__ import annotations

import gzip
import hashlib
import threading

import pytest

from streams.tier import attempt
from streams.tier.attempt import OFFLOAD_BYTES, pack


@pytest.mark.parametrize("size", [0, 100, OFFLOAD_BYTES - 1, OFFLOAD_BYTES, 300_000])
async def test_pack_round_trips(size: int) -> None:
    body = (b"<p>scrapifie</p>" * (size // 16 + 1))[:size]
    content, sha = await pack(body)
    assert gzip.decompress(content) == body
    assert sha == hashlib.sha256(body).hexdigest()
    assert content == (await pack(body))[0]  # deterministic: no timestamp
    assert content[4:8] == b"\0\0\0\0"  # gzip MTIME unset


async def test_only_big_bodies_leave_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = attempt.pack_body

    def spy(body: bytes) -> tuple[bytes, str]:
        threads.append(threading.get_ident())
        return real(body)

    monkeypatch.setattr(attempt, "pack_body", spy)
    await pack(b"x" * (OFFLOAD_BYTES - 1))
    await pack(b"x" * OFFLOAD_BYTES)
    loop_thread = threading.get_ident()
    assert threads[0] == loop_thread
    assert threads[1] != loop_thread
