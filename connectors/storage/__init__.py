"""Object storage backends, chosen by name (``local`` or ``s3``)."""

from __future__ import annotations

from pathlib import Path

from connectors.config import StorageConfig
from connectors.storage.base import ObjectStore, StorageError
from connectors.storage.local import LocalObjectStore

__all__ = ["LocalObjectStore", "ObjectStore", "StorageError", "open_store"]


def open_store(cfg: StorageConfig, data_dir: Path) -> ObjectStore:
    if cfg.backend == "local":
        return LocalObjectStore(cfg.root or data_dir / "objects", sync=cfg.local_sync)
    if cfg.backend == "s3":
        from connectors.storage.s3 import S3ObjectStore

        return S3ObjectStore(
            cfg.s3_bucket,
            endpoint_url=cfg.s3_endpoint_url,
            region=cfg.s3_region,
            access_key_id=cfg.s3_access_key_id.get_secret_value() if cfg.s3_access_key_id else None,
            secret_access_key=(
                cfg.s3_secret_access_key.get_secret_value() if cfg.s3_secret_access_key else None
            ),
            create_bucket=cfg.s3_create_bucket,
        )
    raise ValueError(f"unknown storage backend {cfg.backend!r}; valid: local, s3")
