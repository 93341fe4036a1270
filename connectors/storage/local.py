"""Objects as files under a root directory; writes are atomic (temp file, fsync, link).

A batch is written by a few worker threads, each taking a share of it: every file is fsynced
before it is linked under its name, and each directory that gained a name is fsynced before
the call returns (so a row written afterwards never points at a name a crash could lose). A
few thread hand-offs per batch instead of one per object, and one directory fsync per
directory and thread instead of one per object.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from connectors.storage.base import StorageError


class LocalObjectStore:
    def __init__(self, root: Path, threads: int = 4) -> None:
        self._root = root
        self._root_abs = root.resolve()
        self._threads = threads

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
        dirs: set[Path] = set()
        try:
            for path, data in items:
                written.append(self._put(path, data))
                if written[-1]:
                    dirs.add(path.parent)
            for directory in dirs:
                dir_fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            raise StorageError(f"cannot write objects under {self._root}: {exc}") from exc
        return written

    @staticmethod
    def _put(path: Path, data: bytes) -> bool:
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # link() fails if the name exists: first writer wins, never a torn file.
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
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
