"""Objects as files under a root directory; writes are atomic (temp file, fsync, link)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from connectors.storage.base import StorageError


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if not path.is_relative_to(self._root.resolve()):
            raise ValueError(f"object key escapes the store: {key!r}")
        return path

    async def put_if_absent(self, key: str, data: bytes, content_type: str) -> bool:
        return await asyncio.to_thread(self._put, key, data)

    def _put(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if path.exists():
            return False
        try:
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
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc}") from exc
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
