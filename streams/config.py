"""Settings of the stream processors. Built by the entrypoint (scrapifie.settings) and passed in."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from streams.politeness.limits import SiteLimit


class FetchConfig(BaseModel):
    """How one fetch behaves."""

    model_config = ConfigDict(frozen=True)

    contact_url: str = Field(
        "https://scrapifie.dev/bot",
        description="Where site owners learn about our crawler and reach the operator.",
    )
    user_agent: str | None = Field(
        None,
        description="Full User-Agent override; default 'Scrapifie/<version> (+<contact_url>)'.",
    )
    timeout_s: float = Field(
        30.0, gt=0, description="Overall deadline of one fetch: headers and body."
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP+TLS connect deadline.")
    max_body_bytes: int = Field(
        5 * 1024 * 1024, gt=0, description="Largest decoded body kept; larger fails too_large."
    )
    max_redirects: int = Field(10, ge=0, description="Redirect hops followed before failing.")
    max_connections: int = Field(256, gt=0, description="Connection pool size of the http tier.")
    max_header_bytes: int = Field(
        16 * 1024, gt=0, description="Longest response header line; longer fails invalid_response."
    )
    allow_private: tuple[str, ...] = Field(
        (),
        description=(
            "Exact host:port targets that may resolve to private, loopback or other non-public"
            " addresses (e.g. '127.0.0.1:8080', '[::1]:443', 'intranet.example:80'). Everything"
            " else non-public is refused with ssrf_blocked. There is no blanket switch."
        ),
    )

    @property
    def effective_user_agent(self) -> str:
        return self.user_agent or f"Scrapifie/0.1 (+{self.contact_url})"


class WorkerConfig(BaseModel):
    """How a tier worker consumes, and how politely it treats sites."""

    model_config = ConfigDict(frozen=True)

    robots_agent: str = Field("Scrapifie", description="Product token matched in robots.txt.")
    robots_ttl_s: float = Field(3600.0, gt=0, description="How long a robots.txt is cached.")
    robots_opt_out_tenants: tuple[str, ...] = Field(
        (),
        description="Tenants whose jobs ignore robots.txt (explicit opt-out; empty by default).",
    )
    site_default: SiteLimit = Field(
        default_factory=SiteLimit, description="Rate and concurrency per registrable domain."
    )
    site_limits: dict[str, SiteLimit] = Field(
        default_factory=dict,
        description='Per-site overrides keyed by registrable domain, e.g. {"example.com": ...}.',
    )
    max_site_delay_s: float = Field(60.0, gt=0, description="Longest adaptive delay per site.")
    max_attempts_per_tier: int = Field(
        3, gt=0, description="Attempts in one tier (first included) before a transient fault fails."
    )
    retry_base_delay_s: float = Field(
        2.0,
        gt=0,
        description="First retry delay; doubles per attempt, ±50% jitter, Retry-After wins.",
    )
    max_site_backlog: int = Field(
        32,
        gt=0,
        description=(
            "Jobs of one site allowed to wait for its rate limit inside a worker; more are parked"
            " in a delay topic so that one busy site cannot hold up the others."
        ),
    )

    router_warmup_s: float = Field(
        600.0,
        ge=0,
        description=(
            "The router relearns this many seconds of scrape.routing when it starts (0: none);"
            " sites seen only earlier start on the cheapest tier again."
        ),
    )
    max_in_flight: int = Field(64, gt=0, description="Fetches in flight per worker process.")
    group_prefix: str = Field("scrapifie", description="Consumer group (Faust app id) prefix.")
    instance_id: str | None = Field(
        None,
        description=(
            "Static group membership id (Kafka KIP-345), unique and stable per process (e.g. the"
            " pod name): a restarted process takes its partitions back at once instead of"
            " waiting for its old session to expire."
        ),
    )
    session_timeout_s: float = Field(
        20.0,
        ge=6,
        description="Kafka group session timeout: how soon a dead worker's partitions move.",
    )
    extract_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "Longest a job's extraction rules may run on one page (in a child process); past"
            " it they are stopped and the job has no extract document."
        ),
    )
    cache_share_public: bool = Field(
        False,
        description=(
            "Let a tenant's job be answered from another tenant's cached fetch when neither sets"
            " request headers or a session (off: tenants never see each other's pages)."
        ),
    )
    cache_timeout_s: float = Field(
        2.0, gt=0, description="Longest wait for the result cache before fetching instead."
    )
