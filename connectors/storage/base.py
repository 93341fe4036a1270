"""The object store interface: one small protocol, one module per backend beside it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class StorageError(Exception):
    """The backend failed (unreachable, 5xx...). Callers retry with backoff; nothing is lost."""


class ObjectStore(Protocol):
    """Objects are immutable once written: ``put_if_absent`` keeps the first version.

    Keys are deterministic (schemas.content_object_key), so a replayed event finds its object
    already there and writes nothing: no duplicates, and row and object always agree.
    """

    async def put_if_absent(self, key: str, data: bytes, content_type: str) -> bool:
        """Store ``data`` at ``key`` unless it exists; True if written now."""
        ...

    async def put_many_if_absent(self, items: Sequence[tuple[str, bytes, str]]) -> list[bool]:
        """``put_if_absent`` for each ``(key, data, content_type)``; all durable on return."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The object, or None when absent."""
        ...

    async def ping(self) -> None:
        """Raise StorageError if the backend cannot be reached."""
        ...
