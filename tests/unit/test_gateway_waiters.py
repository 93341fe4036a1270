"""The gateway's waiter registry and wait loop (connectors/gateway/waiters.py), and the pure
helpers of its content responses (connectors/gateway/content.py). No network: the row reader
is a fake."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from typing import Any

import pytest

from connectors.gateway.content import CHUNK_BYTES, _Inflater, accepts_gzip, media_type
from connectors.gateway.waiters import Waiters, wait_final
from connectors.sinks.pg import NOTIFY_CHUNK, notify_params

pytestmark = pytest.mark.unit

QUEUED = {"status": "queued"}
DONE = {"status": "succeeded"}


class Rows:
    """A fake row reader: returns ``rows`` in turn (the last one forever), counting calls."""

    def __init__(self, *rows: dict[str, Any] | None) -> None:
        self.rows = list(rows)
        self.reads = 0

    async def __call__(self) -> dict[str, Any] | None:
        self.reads += 1
        return self.rows.pop(0) if len(self.rows) > 1 else self.rows[0]


async def test_watch_registers_until_the_block_exits() -> None:
    waiters = Waiters()
    with waiters.watch("a") as first, waiters.watch("a") as second, waiters.watch("b") as other:
        assert len(waiters) == 3
        assert waiters.wake(["a", "unknown"]) == 2
        assert first.done() and second.done() and not other.done()
        assert waiters.wake(["a"]) == 0  # already woken
    assert len(waiters) == 0
    assert waiters.wake(["a", "b"]) == 0


async def test_wake_all_wakes_every_waiter() -> None:
    waiters = Waiters()
    with waiters.watch("a") as a, waiters.watch("b") as b:
        assert waiters.wake_all() == 2
        assert a.done() and b.done()


async def test_a_job_already_final_costs_one_read() -> None:
    waiters, read = Waiters(), Rows(DONE)
    assert await wait_final(waiters, "j", 5, read) == DONE
    assert read.reads == 1 and len(waiters) == 0


async def test_a_waiter_reads_again_only_when_woken() -> None:
    waiters, read = Waiters(), Rows(QUEUED, DONE)
    task = asyncio.create_task(wait_final(waiters, "j", 5, read))
    for _ in range(20):  # several loop turns: no polling in between
        await asyncio.sleep(0)
    assert read.reads == 1 and len(waiters) == 1
    waiters.wake(["j"])
    assert await task == DONE
    assert read.reads == 2 and len(waiters) == 0


async def test_a_spurious_wake_up_waits_again() -> None:
    waiters, read = Waiters(), Rows(QUEUED, QUEUED, DONE)
    task = asyncio.create_task(wait_final(waiters, "j", 5, read))
    await asyncio.sleep(0.01)
    waiters.wake_all()  # e.g. the listener reconnected: the job is not final yet
    await asyncio.sleep(0.01)
    assert not task.done() and read.reads == 2 and len(waiters) == 1
    waiters.wake(["j"])
    assert await task == DONE and read.reads == 3


async def test_a_wake_up_during_the_first_read_is_not_lost() -> None:
    """The notification arrives after registration but before the read returns."""
    waiters = Waiters()
    reads = 0

    async def read() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        if reads == 1:
            waiters.wake(["j"])  # the row turned final while this read was in flight
            return QUEUED
        return DONE

    assert await asyncio.wait_for(wait_final(waiters, "j", 5, read), 1) == DONE
    assert reads == 2


async def test_the_deadline_takes_one_last_look() -> None:
    """No notification at all (the listener was down): the row is read once more at the end."""
    waiters, read = Waiters(), Rows(QUEUED, DONE)
    assert await wait_final(waiters, "j", 0.05, read) == DONE
    assert read.reads == 2 and len(waiters) == 0


async def test_a_job_still_running_at_the_deadline_gives_none() -> None:
    waiters, read = Waiters(), Rows(QUEUED)
    assert await wait_final(waiters, "j", 0.05, read) is None
    assert read.reads == 2 and len(waiters) == 0


async def test_a_cancelled_waiter_unregisters() -> None:
    waiters, read = Waiters(), Rows(QUEUED)
    task = asyncio.create_task(wait_final(waiters, "j", 5, read))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(waiters) == 0


def test_notify_params_send_only_canonical_uuids_in_payload_sized_chunks() -> None:
    ids = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(400)]
    params = notify_params([*ids, "not-a-uuid", "A" * 10_000, ids[0].upper(), ids[1]])
    assert params == [["scrapifie_jobs_final", sorted(ids)]]
    assert NOTIFY_CHUNK * 37 < 8000  # 36 characters and a comma per id: under pg_notify's limit
    assert notify_params(["x", "y"]) == []


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("x-gzip", True),
        ("*", True),
        ("GZIP", True),
        ("", False),
        ("identity", False),
        ("br, deflate", False),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("gzip;q=nan", False),
        ("gzip;q=abc", False),
        ("*, gzip;q=0", False),
    ],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text/html; charset=utf-8", "text/html; charset=utf-8"),
        (None, "application/octet-stream"),
        ("", "application/octet-stream"),
        ("text/html\r\nX-Evil: 1", "application/octet-stream"),
        ("text/html\x00", "application/octet-stream"),
        ("téxt/html", "application/octet-stream"),
        ("html", "application/octet-stream"),
    ],
)
def test_media_type(value: str | None, expected: str) -> None:
    assert media_type(value) == expected


def _inflate_all(data: bytes) -> list[bytes]:
    inflater, pieces = _Inflater(data), []
    while piece := inflater.step():
        pieces.append(piece)
    return pieces


def test_inflater_bounds_every_step_and_matches_gzip() -> None:
    body = b"\x00" * (20 * CHUNK_BYTES + 17)  # ~5 MiB of zeros in ~5 KB of gzip
    pieces = _inflate_all(gzip.compress(body))
    assert b"".join(pieces) == body
    assert max(map(len, pieces)) <= CHUNK_BYTES and len(pieces) == 21


def test_inflater_reads_every_member_and_skips_padding() -> None:
    data = gzip.compress(b"one ") + gzip.compress(b"two") + b"\x00" * 8
    assert b"".join(_inflate_all(data)) == gzip.decompress(data) == b"one two"
    assert _inflate_all(gzip.compress(b"")) == []


def test_inflater_refuses_corrupt_and_truncated_data() -> None:
    data = gzip.compress(bytes(range(256)) * 4000)
    with pytest.raises(EOFError):
        _inflate_all(data[: len(data) // 2])
    with pytest.raises(zlib.error):
        _inflate_all(b"not gzip at all")
    with pytest.raises(EOFError):
        _inflate_all(b"")
