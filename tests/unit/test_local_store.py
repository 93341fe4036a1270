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


@pytest.mark.parametrize("sync", ["filesystem", "file"])
async def test_every_object_is_durable_before_it_is_named_and_every_name_before_return(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: str
) -> None:
    """The crash-safety order, in either mode: a name never points at data not yet synced, and
    the call returns only once the names are synced too (a row may then name them)."""
    import os

    from connectors.storage import local

    events: list[tuple[str, object]] = []
    real_link, real_fsync = os.link, os.fsync

    def link(src: str, dst: str, **kwargs: object) -> None:
        events.append(("link", dst))
        real_link(src, dst, **kwargs)  # type: ignore[arg-type]

    def fsync(fd: int) -> None:
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(local, "CHUNK", 4)  # three chunks: each synced before it is named
    store = LocalObjectStore(tmp_path, sync=sync)  # type: ignore[arg-type]
    if sync == "filesystem":
        if store.sync != "filesystem":
            pytest.skip("no syncfs on this platform")
        monkeypatch.setattr(store, "_syncfs", lambda fd: events.append(("syncfs", fd)))
    keys = [f"documents/t/{i % 3:02x}/job-{i}.md.gz" for i in range(10)]
    assert await store.put_many_if_absent([(k, k.encode(), "x") for k in keys]) == [True] * 10

    kinds = [e[0] for e in events]
    assert kinds.count("link") == 10
    assert kinds[-1] != "link"  # the names' sync comes last
    for start in range(0, 10, 4):  # each chunk: its data synced, then its names
        chunk_links = [i for i, e in enumerate(events) if e[0] == "link"][start : start + 4]
        before = kinds[: chunk_links[0]]
        synced_files = [e for e in events[: chunk_links[0]] if e == ("fsync", False)]
        if sync == "filesystem":
            assert before.count("syncfs") == start // 4 + 1
            assert "fsync" not in kinds
        else:
            assert len(synced_files) == min(start + 4, 10)
    if sync == "file":
        assert ("fsync", True) in events[-3:]  # the directories that gained names
    for k in keys:
        assert await store.get(k) == k.encode()


async def test_unnamed_files_that_cannot_be_linked_fall_back_to_named_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc may be missing or forbid linking open files (some sandboxes): the object is written
    again as a named temp file and linked from there; nothing is left behind."""
    import errno
    import os

    real_link = os.link

    def no_proc_link(src: str, dst: str, **kwargs: object) -> None:
        if str(src).startswith("/proc/self/fd/"):
            raise OSError(errno.ENOENT, "No such file or directory")
        real_link(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", no_proc_link)
    store = LocalObjectStore(tmp_path)
    items = [(f"a/{i}", bytes([i]) * 10, "x") for i in range(3)]
    assert await store.put_many_if_absent(items) == [True] * 3
    assert store._tmpfile is False
    assert [await store.get(k) for k, _, _ in items] == [d for _, d, _ in items]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["0", "1", "2"]
