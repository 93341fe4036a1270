"""connectors.storage.local.LocalObjectStore on a temporary directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from connectors.storage import LocalObjectStore

pytestmark = pytest.mark.unit


async def test_first_version_wins_and_batches_report_what_they_wrote(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    assert await store.put_if_absent("content/t/ab/job-1.html.gz", b"one", "application/gzip")
    written = await store.put_many_if_absent(
        [
            ("content/t/ab/job-1.html.gz", b"other", "application/gzip"),
            ("content/t/cd/job-2.html.gz", b"two", "application/gzip"),
            ("screenshots/t/cd/job-2.png", b"png", "image/png"),
        ]
    )
    assert written == [False, True, True]
    assert await store.get("content/t/ab/job-1.html.gz") == b"one"
    assert await store.get("content/t/cd/job-2.html.gz") == b"two"
    assert await store.get("content/t/cd/missing.html.gz") is None
    assert await store.put_many_if_absent([]) == []
    leftovers = [p.name for p in (tmp_path / "objects").rglob(".tmp-*")]
    assert leftovers == []


async def test_concurrent_writers_of_one_key_write_it_once(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    key = "content/t/ab/job-1.html.gz"
    results = await asyncio.gather(
        *(store.put_many_if_absent([(key, bytes([i]) * 100, "x")]) for i in range(8))
    )
    assert sum(r[0] for r in results) == 1
    assert len(await store.get(key) or b"") == 100


@pytest.mark.parametrize(
    "key", ["", "../outside", "content/../../outside", "/etc/passwd", "a//b", "a/./b", "a\0b"]
)
async def test_keys_that_could_leave_the_root_are_refused(tmp_path: Path, key: str) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    with pytest.raises(ValueError, match="escapes the store"):
        await store.put_many_if_absent([(key, b"x", "x")])
    with pytest.raises(ValueError, match="escapes the store"):
        await store.get(key)
    assert not (tmp_path / "outside").exists()
