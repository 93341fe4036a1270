"""Objects as files under a root directory; writes are atomic and durable before they return.

Each object is written to an unnamed file (``O_TMPFILE``) in its directory, fsynced, then linked
under its name (``linkat``), which fails if the name exists: first writer wins, a reader never
sees a torn file, and a crash leaves no temp file behind. Where the filesystem has no
``O_TMPFILE`` the store falls back to a named temp file, fsync, ``link`` and ``unlink``.
(Measured: the unnamed file costs ~0.155 ms of CPU per 9 KB object against ~0.215 for the
named one, fsync included; without fsync ~0.05.)

A batch is written by a few worker threads, each taking a share of it; each directory that
gained a name is fsynced once per thread before the call returns, so a row written afterwards
never points at a name a crash could lose.
"""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from connectors.storage.base import StorageError

_O_TMPFILE: int = getattr(os, "O_TMPFILE", 0)
# What open(O_TMPFILE) or a link through /proc says where unnamed files cannot be used.
_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT, errno.EXDEV}


class LocalObjectStore:
    def __init__(self, root: Path, threads: int = 4) -> None:
        self._root = root
        self._root_abs = root.resolve()
        self._threads = threads
        self._tmpfile = bool(_O_TMPFILE) and os.path.isdir("/proc/self/fd")

    def _path(self, key: str) -> Path:
        """``root/key``; refuses keys that could name anything outside the root. Checked on the
        text (no filesystem calls): keys are ours, relative, with no empty, '.' or '..' part."""
        parts = key.split("/")
        if not key or "\0" in key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"object key escapes the store: {key!r}")
        return self._root_abs.joinpath(*parts)

    async def put_if_absent(self, key: str, data: bytes, content_type: str) -> bool:
        (written,) = await self.put_many_if_absent([(key, data, content_type)])
        return written

    async def put_many_if_absent(self, items: Sequence[tuple[str, bytes, str]]) -> list[bool]:
        if not items:
            return []
        paths = [(self._path(key), data) for key, data, _ctype in items]
        # A few threads, so that their fsync waits overlap (the disk commits them together).
        chunks = [paths[i :: self._threads] for i in range(min(self._threads, len(paths)))]
        done = await asyncio.gather(*(asyncio.to_thread(self._put_many, c) for c in chunks))
        written = [False] * len(paths)
        for i, chunk in enumerate(done):
            written[i :: self._threads] = chunk
        return written

    def _put_many(self, items: list[tuple[Path, bytes]]) -> list[bool]:
        written: list[bool] = []
        dirs: dict[Path, int] = {}  # open directory fds, each fsynced once if it gained a name
        grown: set[int] = set()
        try:
            for path, data in items:
                dir_fd = dirs.get(path.parent)
                if dir_fd is None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    dir_fd = dirs[path.parent] = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
                written.append(self._put(dir_fd, path, data))
                if written[-1]:
                    grown.add(dir_fd)
            for dir_fd in grown:
                os.fsync(dir_fd)
        except OSError as exc:
            raise StorageError(f"cannot write objects under {self._root}: {exc}") from exc
        finally:
            for dir_fd in dirs.values():
                os.close(dir_fd)
        return written

    def _put(self, dir_fd: int, path: Path, data: bytes) -> bool:
        try:
            os.stat(path.name, dir_fd=dir_fd)
            return False
        except FileNotFoundError:
            pass
        if self._tmpfile:
            try:
                return self._put_unnamed(dir_fd, path.name, data)
            except OSError as exc:
                if exc.errno not in _NO_TMPFILE:
                    raise
                self._tmpfile = False  # this filesystem cannot: named temp files from now on
        return self._put_named(path, data)

    @staticmethod
    def _put_unnamed(dir_fd: int, name: str, data: bytes) -> bool:
        fd = os.open(".", _O_TMPFILE | os.O_WRONLY, 0o600, dir_fd=dir_fd)
        try:
            _write_all(fd, data)
            os.fsync(fd)
            # linkat(AT_SYMLINK_FOLLOW) names the open file; it fails if the name exists.
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd)
        except FileExistsError:
            return False
        finally:
            os.close(fd)
        return True

    @staticmethod
    def _put_named(path: Path, data: bytes) -> bool:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            _write_all(fd, data)
            os.fsync(fd)
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.close(fd)
            os.unlink(tmp)
        return True

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
