"""Objects in any S3-compatible store (AWS S3, MinIO, R2...) through boto3 in a thread pool."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from connectors.storage.base import StorageError

_ABSENT = {"404", "NoSuchKey", "NotFound"}


class S3ObjectStore:
    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        create_bucket: bool = False,
    ) -> None:
        self._bucket = bucket
        self._create_bucket = create_bucket
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
                max_pool_connections=32,
                s3={"addressing_style": "path"},
            ),
        )
        self._bucket_ready = False
        self._requests = asyncio.Semaphore(16)  # a batch's puts at once (pool: 32 connections)

    async def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self._client, op), **kwargs)
        except ClientError:
            raise
        except BotoCoreError as exc:
            raise StorageError(f"S3 {op} failed: {exc}") from exc

    async def _ensure_bucket(self) -> None:
        if self._bucket_ready or not self._create_bucket:
            return
        try:
            await self._call("head_bucket", Bucket=self._bucket)
        except ClientError as exc:
            if _code(exc) not in _ABSENT and _code(exc) != "NoSuchBucket":
                raise StorageError(f"S3 head_bucket failed: {exc}") from exc
            try:
                await self._call("create_bucket", Bucket=self._bucket)
            except ClientError as exc2:
                if _code(exc2) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise StorageError(f"S3 create_bucket failed: {exc2}") from exc2
        self._bucket_ready = True

    async def put_if_absent(self, key: str, data: bytes, content_type: str) -> bool:
        await self._ensure_bucket()
        if await self._exists(key):
            return False
        try:
            await self._call(
                "put_object", Bucket=self._bucket, Key=key, Body=data, ContentType=content_type
            )
        except ClientError as exc:
            raise StorageError(f"S3 put_object {key} failed: {exc}") from exc
        return True

    async def put_many_if_absent(self, items: Sequence[tuple[str, bytes, str]]) -> list[bool]:
        async def one(key: str, data: bytes, content_type: str) -> bool:
            async with self._requests:
                return await self.put_if_absent(key, data, content_type)

        return list(await asyncio.gather(*(one(*item) for item in items)))

    async def _exists(self, key: str) -> bool:
        try:
            await self._call("head_object", Bucket=self._bucket, Key=key)
            return True
        except ClientError as exc:
            if _code(exc) in _ABSENT:
                return False
            raise StorageError(f"S3 head_object {key} failed: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        try:
            resp = await self._call("get_object", Bucket=self._bucket, Key=key)
            body: bytes = await asyncio.to_thread(resp["Body"].read)
            return body
        except ClientError as exc:
            if _code(exc) in _ABSENT:
                return None
            raise StorageError(f"S3 get_object {key} failed: {exc}") from exc

    async def ping(self) -> None:
        await self._ensure_bucket()
        try:
            await self._call("head_bucket", Bucket=self._bucket)
        except ClientError as exc:
            raise StorageError(f"S3 bucket {self._bucket} unavailable: {exc}") from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
