"""Reading the object store: every content and screenshot object, and whose each key is."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from connectors.config import StorageConfig
from connectors.storage import StorageError
from schemas import content_object_key, screenshot_object_key
from schemas.records import JobStatus
from scrapifie.settings import Settings
from scrapifie.verify.report import Progress
from scrapifie.verify.state import JobRow, VerifyError

__all__ = ["list_objects", "owned_keys", "parse_object_key"]

_KINDS = {
    "content": (".html.gz", content_object_key),
    "screenshots": (".png", screenshot_object_key),
}


async def list_objects(settings: Settings, progress: Progress) -> dict[str, datetime]:
    """Every content object (key → last modified) of the configured store."""
    storage = settings.storage
    progress.say(f"listing objects ({storage.backend})")
    try:
        if storage.backend == "local":
            root = storage.root or settings.data_dir / "objects"
            return await asyncio.to_thread(_list_local, root, progress)
        return await asyncio.to_thread(_list_s3, storage, progress)
    except (OSError, StorageError) as exc:
        raise VerifyError(f"object store unreadable: {exc}") from exc


def parse_object_key(key: str) -> tuple[str, str, str] | None:
    """(kind, tenant, job_id) of a key made by schemas.content_object_key ("content") or
    screenshot_object_key ("screenshots"), else None."""
    parts = key.split("/")
    if len(parts) < 4 or parts[0] not in _KINDS:
        return None
    suffix, make = _KINDS[parts[0]]
    if not parts[-1].endswith(suffix):
        return None
    job_id = parts[-1].removesuffix(suffix)
    tenant = "/".join(parts[1:-2])
    return (parts[0], tenant, job_id) if make(tenant, job_id) == key else None


def owned_keys(rows: Iterable[JobRow]) -> set[str]:
    """The object keys that succeeded rows refer to."""
    return {
        key
        for r in rows
        if r.status == JobStatus.SUCCEEDED
        for key in (r.content_key, r.screenshot_key)
        if key
    }


def _list_local(root: Path, progress: Progress) -> dict[str, datetime]:
    out: dict[str, datetime] = {}
    for prefix in _KINDS:
        for dirpath, _dirs, files in os.walk(root / prefix):
            for name in files:
                if name.startswith(".tmp-"):
                    continue  # a write in progress (or one a crash left behind: never linked)
                path = Path(dirpath) / name
                key = path.relative_to(root).as_posix()
                out[key] = datetime.fromtimestamp(path.stat().st_mtime, UTC)
                if len(out) % 10_000 == 0:
                    progress.say(f"listed {len(out)} objects", force=False)
    return out


def _list_s3(cfg: StorageConfig, progress: Progress) -> dict[str, datetime]:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=cfg.s3_endpoint_url,
        region_name=cfg.s3_region,
        aws_access_key_id=cfg.s3_access_key_id.get_secret_value() if cfg.s3_access_key_id else None,
        aws_secret_access_key=(
            cfg.s3_secret_access_key.get_secret_value() if cfg.s3_secret_access_key else None
        ),
        config=Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            s3={"addressing_style": "path"},
        ),
    )
    out: dict[str, datetime] = {}
    try:
        for prefix in _KINDS:
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=cfg.s3_bucket, Prefix=f"{prefix}/"
            ):
                for obj in page.get("Contents", []):
                    out[obj["Key"]] = obj["LastModified"]
                progress.say(f"listed {len(out)} objects", force=False)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            return out  # nothing written yet
        raise StorageError(f"S3 list_objects_v2 on {cfg.s3_bucket} failed: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"S3 list_objects_v2 on {cfg.s3_bucket} failed: {exc}") from exc
    finally:
        client.close()
    return out
