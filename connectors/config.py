"""Settings of the pipeline's edges. Built by the entrypoint (scrapifie.settings) and passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class PostgresConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    dsn: SecretStr | None = Field(
        None, description="postgresql:// DSN of an external server; unset: the local one."
    )
    port: int = Field(5433, description="Port of the local server started by `scrapifie up`.")


class StorageConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    backend: Literal["local", "s3"] = Field("local", description="Where content objects go.")
    root: Path | None = Field(
        None, description="Local backend: directory (default <data>/objects)."
    )
    local_sync: Literal["filesystem", "file"] = Field(
        "filesystem",
        description=(
            "Local backend: how a batch's objects are made durable before their rows name them."
            " `filesystem`: one syncfs for the batch's data, one for their names (Linux; else"
            " `file`). `file`: an fsync of each object and of each directory that gained one."
        ),
    )
    s3_endpoint_url: str | None = Field(None, description="S3 API endpoint (MinIO, R2...).")
    s3_bucket: str = Field("scrapifie", description="Bucket for content objects.")
    s3_region: str = Field("us-east-1", description="Signing region.")
    s3_access_key_id: SecretStr | None = Field(None, description="Access key id.")
    s3_secret_access_key: SecretStr | None = Field(None, description="Secret access key.")
    s3_create_bucket: bool = Field(True, description="Create the bucket at start if missing.")


class SinkConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    batch_max_records: int = Field(2000, gt=0, description="Records written per transaction.")
    batch_wait_s: float = Field(
        0.02,
        ge=0,
        description=(
            "How long a batch may wait for more records after its first one (fewer, larger"
            " transactions; adds up to this much to the time a row takes to appear)."
        ),
    )
    batch_interval_s: float = Field(
        0.1,
        ge=0,
        description=(
            "Group commit: while records keep coming, a sink starts at most one batch write per"
            " this interval, so each transaction, WAL flush and offset commit covers more records"
            " under load. A record that arrives after a quiet interval waits only batch_wait_s."
        ),
    )
    max_backoff_s: float = Field(10.0, gt=0, description="Cap of the retry backoff on failures.")
    group_prefix: str = Field("scrapifie", description="Consumer group prefix.")
    instance_id: str | None = Field(
        None,
        description=(
            "Static group membership id (Kafka KIP-345), unique and stable per process (e.g. the"
            " pod name): a restarted process takes its partitions back at once instead of"
            " waiting for its old session to expire."
        ),
    )


class GatewayConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str = Field("127.0.0.1", description="Listen address.")
    port: int = Field(8080, description="Listen port.")
    max_body_bytes: int = Field(1024 * 1024, description="Largest request body accepted.")
    max_wait_s: float = Field(60.0, description="Longest ?wait= accepted.")
    publish_timeout_s: float = Field(
        10.0, gt=0, description="How long a POST waits for Kafka to acknowledge its jobs."
    )
    max_batch: int = Field(1000, description="Most jobs in one batch request.")
    default_tier: str = Field("auto", description="Tier of jobs that name none (auto: router).")
    rate_per_s: float = Field(
        50.0, gt=0, description="Submissions per second per tenant (a tenant's own rate wins)."
    )
    max_jobs: int = Field(
        10_000, gt=0, description="Jobs queued or running per tenant (a tenant's own cap wins)."
    )
    admit_without_db: bool = Field(
        True,
        description=(
            "While PostgreSQL is unreachable, accept jobs without reserving credits (they are"
            " charged when they end; limits apply again once it answers). Off: answer 503."
        ),
    )
    tiers: tuple[str, ...] = Field(
        ("http", "browser", "stealth"),
        description="Tiers this deployment runs workers for; jobs may name these or 'auto'.",
    )
