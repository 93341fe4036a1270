"""Objects as files under a root directory; writes are atomic and durable before they return.

A call writes its objects in two phases, so that no name can ever point at data a crash could
lose, and a reader never sees a torn file:

1. each object is written to an unnamed file (``O_TMPFILE``) in its directory;
2. their data is made durable: one ``syncfs`` of the store's filesystem for the lot (``sync=
   "filesystem"``, the default on Linux), or an ``fsync`` of each file (``sync="file"``);
3. each is linked under its name (``linkat``), which fails if the name exists: first writer
   wins;
4. the names are made durable: one more ``syncfs``, or an ``fsync`` of each directory that
   gained one.

A crash leaves no temp file behind. Where the filesystem has no ``O_TMPFILE`` the store falls
back to named temp files (``.tmp-*``), linked and unlinked in step 3.

Why ``syncfs``: a results batch names thousands of objects, a few per job (the page and its
derived formats), spread over hundreds of shard directories. An fsync per file and per
directory costs an I/O request and a cache flush each, ~0.2 ms of CPU per object on the bench
machine; a single ``syncfs`` lets the kernel write the batch's files together: ~0.07 ms per
object, and one thread does it (bench/HISTORY.md, 2026-12-07). It also writes back whatever
else is dirty on that filesystem, so a store that shares its disk with a busy writer that never
syncs may prefer ``sync="file"`` (``SCRAPIFIE_STORAGE__LOCAL_SYNC``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from connectors.storage.base import StorageError

_O_TMPFILE: int = getattr(os, "O_TMPFILE", 0)
# What open(O_TMPFILE) or a link through /proc says where unnamed files cannot be used.
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT, errno.EXDEV}
# Files written (and held open) before each sync: bounded by the open-file limit.
CHUNK = 512

Sync = Literal["filesystem", "file"]


def _load_syncfs() -> Callable[[int], None] | None:
    """``syncfs(2)`` (Linux; Python has no binding), or None where it cannot be called."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if fn(fd) != 0:  # since Linux 5.8 this also reports writeback errors of the filesystem
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs: {os.strerror(code)}")

    return syncfs


_SYNCFS = _load_syncfs()


@dataclass(slots=True)
class _Pending:
    """A file holding an object's data, not yet under its name."""

    index: int
    fd: int
    dir_fd: int
    directory: str
    name: str
    tmp_name: str | None  # the named temp file's name, when unnamed files cannot be used
    data: bytes


class LocalObjectStore:
    def __init__(self, root: Path, sync: Sync = "filesystem") -> None:
        self._root = root
        self._root_str = str(root.resolve())
        self._tmpfile = bool(_O_TMPFILE) and os.path.isdir("/proc/self/fd")
        self._syncfs = _SYNCFS if sync == "filesystem" else None
        self.sync: Sync = "filesystem" if self._syncfs is not None else "file"

    def _path(self, key: str) -> str:
        """``root/key``; refuses keys that could name anything outside the root. Checked on the
        text (no filesystem calls): keys are ours, relative, with no empty, '.' or '..' part."""
        if not key or "\0" in key or any(p in ("", ".", "..") for p in key.split("/")):
            raise ValueError(f"object key escapes the store: {key!r}")
        return f"{self._root_str}/{key}"

    async def put_if_absent(self, key: str, data: bytes, content_type: str) -> bool:
        (written,) = await self.put_many_if_absent([(key, data, content_type)])
        return written

    async def put_many_if_absent(self, items: Sequence[tuple[str, bytes, str]]) -> list[bool]:
        if not items:
            return []
        paths = [(self._path(key), data) for key, data, _ctype in items]
        # One thread: with no fsync to wait for, more threads only contend for the GIL.
        return await asyncio.to_thread(self._put_many, paths)

    def _put_many(self, items: list[tuple[str, bytes]]) -> list[bool]:
        written = [False] * len(items)
        dirs: dict[str, int] = {}  # open directory fds
        grown: set[int] = set()  # those that gained a name
        try:
            root_fd = _open_dir(self._root_str)
            try:
                for start in range(0, len(items), CHUNK):
                    pending: list[_Pending] = []
                    try:
                        for i in range(start, min(start + CHUNK, len(items))):
                            directory, _, name = items[i][0].rpartition("/")
                            dir_fd = dirs.get(directory)
                            if dir_fd is None:
                                dir_fd = dirs[directory] = _open_dir(directory)
                            # No check for an existing name first: linking fails on one, and
                            # only a replayed batch has any (its data is written for nothing).
                            pending.append(self._write(i, dir_fd, directory, name, items[i][1]))
                        if pending:
                            self._data_durable(root_fd, pending)
                        for p in pending:
                            written[p.index] = self._link(p)
                            if written[p.index]:
                                grown.add(p.dir_fd)
                    finally:
                        for p in pending:
                            _discard(p)
                if grown:
                    self._names_durable(root_fd, grown)
            finally:
                os.close(root_fd)
        except OSError as exc:
            raise StorageError(f"cannot write objects under {self._root}: {exc}") from exc
        finally:
            for dir_fd in dirs.values():
                os.close(dir_fd)
        return written

    def _write(self, index: int, dir_fd: int, directory: str, name: str, data: bytes) -> _Pending:
        if self._tmpfile:
            try:
                fd = os.open(".", _O_TMPFILE | os.O_WRONLY, 0o600, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
                self._tmpfile = False  # this filesystem cannot: named temp files from now on
            else:
                pending = _Pending(index, fd, dir_fd, directory, name, None, data)
                _write_all(pending)
                return pending
        return self._write_named(index, dir_fd, directory, name, data)

    @staticmethod
    def _write_named(index: int, dir_fd: int, directory: str, name: str, data: bytes) -> _Pending:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        pending = _Pending(index, fd, dir_fd, directory, name, os.path.basename(tmp), data)
        _write_all(pending)
        return pending

    def _link(self, p: _Pending) -> bool:
        """Name ``p``'s file; False when the name exists already (another writer was first)."""
        try:
            return _link(p)
        except OSError as exc:
            if p.tmp_name is not None or exc.errno not in _NO_TMPFILE:
                raise
        # No linking of open files through /proc here: the object again, as a named temp file
        # made durable on its own (this happens once; later objects take that path directly).
        self._tmpfile = False
        named = self._write_named(p.index, p.dir_fd, p.directory, p.name, p.data)
        try:
            os.fsync(named.fd)
            return _link(named)
        finally:
            _discard(named)

    def _data_durable(self, root_fd: int, pending: list[_Pending]) -> None:
        if self._syncfs is not None:
            self._syncfs(root_fd)
        else:
            for p in pending:
                os.fsync(p.fd)

    def _names_durable(self, root_fd: int, grown: set[int]) -> None:
        if self._syncfs is not None:
            self._syncfs(root_fd)
        else:
            for dir_fd in grown:
                os.fsync(dir_fd)

    async def get(self, key: str) -> bytes | None:
        path = Path(self._path(key))
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc

    async def ping(self) -> None:
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot use {self._root}: {exc}") from exc


def _open_dir(path: str) -> int:
    """An fd of directory ``path``, made (with its parents) if missing."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def _write_all(p: _Pending) -> None:
    view = memoryview(p.data)
    try:
        while view:
            view = view[os.write(p.fd, view) :]
    except BaseException:
        _discard(p)
        raise


def _link(p: _Pending) -> bool:
    try:
        if p.tmp_name is None:
            # linkat(AT_SYMLINK_FOLLOW) names the open file.
            os.link(f"/proc/self/fd/{p.fd}", p.name, dst_dir_fd=p.dir_fd)
        else:
            os.link(p.tmp_name, p.name, src_dir_fd=p.dir_fd, dst_dir_fd=p.dir_fd)
    except FileExistsError:
        return False
    return True


def _discard(p: _Pending) -> None:
    """Close ``p``'s file (an unnamed one goes with it) and remove its temp name; once each."""
    if p.fd >= 0:
        os.close(p.fd)
        p.fd = -1
    if p.tmp_name is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p.tmp_name, dir_fd=p.dir_fd)
        p.tmp_name = None
