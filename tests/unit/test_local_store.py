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


@pytest.mark.parametrize("unnamed", [True, False], ids=["O_TMPFILE", "named temp file"])
async def test_both_write_paths_store_whole_private_files(tmp_path: Path, unnamed: bool) -> None:
    store = LocalObjectStore(tmp_path)
    store._tmpfile = unnamed
    big = bytes(range(256)) * 8192  # 2 MiB: more than one write() may take
    keys = [f"content/t/{i % 3:02x}/job-{i}.html.gz" for i in range(12)]
    assert await store.put_many_if_absent([(k, big + k.encode(), "x") for k in keys]) == [True] * 12
    assert await store.put_many_if_absent([(k, b"later", "x") for k in keys]) == [False] * 12
    for k in keys:
        assert await store.get(k) == big + k.encode()
    files = await asyncio.to_thread(_files, tmp_path)
    assert set(files) == {k.rsplit("/", 1)[1] for k in keys}  # no temp file left behind
    assert all(mode & 0o077 == 0 for mode in files.values())  # private to the sink's user


def _files(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode for p in root.rglob("*") if p.is_file()}


async def test_a_filesystem_without_unnamed_files_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    real_open = os.open

    def no_tmpfile(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if flags & getattr(os, "O_TMPFILE", 0) == getattr(os, "O_TMPFILE", -1):
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_tmpfile)
    store = LocalObjectStore(tmp_path)
    assert await store.put_many_if_absent([("a/b/c", b"one", "x")]) == [True]
    assert store._tmpfile is False
    assert await store.get("a/b/c") == b"one"
