"""The one settings object. Built once at the entrypoint from the environment (prefix
``SCRAPIFIE_``, nested with ``__``: ``SCRAPIFIE_KAFKA__BOOTSTRAP=host:9092``) and passed down.
Nothing else reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.config import GatewayConfig, PostgresConfig, SinkConfig, StorageConfig
from schemas.kafka import KafkaConfig
from schemas.options import JobLimits
from schemas.prices import Prices
from streams.browser.config import BrowserConfig
from streams.config import FetchConfig, WorkerConfig
from streams.fetchers.egress import EgressConfig


class LocalKafkaConfig(KafkaConfig):
    """Kafka settings plus the ports of the broker `scrapifie up` starts when none is given."""

    local_port: int = Field(9092, description="Broker port of the local broker.")
    local_controller_port: int = Field(
        9093, description="KRaft controller port of the local broker."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SCRAPIFIE_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    data_dir: Path = Field(
        Path(".data"), description="Local state: broker, database, objects, logs."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="Structured JSON or plain text logs."
    )
    metrics_host: str = Field("127.0.0.1", description="Bind address of every /metrics endpoint.")
    worker_metrics_port: int = Field(9310, description="Metrics port of a worker (0: none).")
    sink_metrics_port: int = Field(9311, description="Metrics port of the sinks (0: none).")
    router_metrics_port: int = Field(9312, description="Metrics port of the router (0: none).")

    api_key: SecretStr | None = Field(
        None, description="API key the CLI sends to the gateway (default: <data_dir>/api_key)."
    )
    gateway_url: str = Field("http://127.0.0.1:8080", description="Gateway the CLI talks to.")

    kafka: LocalKafkaConfig = Field(default_factory=LocalKafkaConfig)
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    egress: EgressConfig = Field(default_factory=EgressConfig)
    browser: BrowserConfig = Field(default_factory=BrowserConfig)
    stealth: BrowserConfig = Field(
        default_factory=lambda: BrowserConfig(
            browsers=1, contexts_per_browser=2, pages_per_browser=50, persistent_contexts=2
        ),
        description="The premium tier: fewer pages at once, persistent profiles per session.",
    )
    postgres: PostgresConfig = Field(default_factory=PostgresConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    sink: SinkConfig = Field(default_factory=SinkConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    prices: Prices = Field(
        default_factory=Prices,
        description=(
            "Credits per page by tier, for a cache hit, a robots refusal and a failed job"
            ' (SCRAPIFIE_PRICES__TIERS=\'{"http": 1, "browser": 5, "stealth": 10}\').'
        ),
    )
    limits: JobLimits = Field(
        default_factory=JobLimits,
        description=(
            "What one job may ask for: past it the gateway answers 400 and a worker fails the job."
        ),
    )

    def dsn(self) -> str:
        """The PostgreSQL DSN: the external one if set, else the local server's."""
        if self.postgres.dsn is not None:
            return self.postgres.dsn.get_secret_value()
        return f"postgresql://scrapifie:scrapifie@127.0.0.1:{self.postgres.port}/scrapifie"
