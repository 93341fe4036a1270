-- Jobs, attempts and tenants. Every write from a sink is idempotent (keyed by job_id or event_id).

CREATE TABLE tenants (
    tenant_id       text PRIMARY KEY,
    api_key_sha256  text UNIQUE NOT NULL,
    credits         bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Job ids are chosen by submitters (idempotency keys), so they are unique per tenant only.
CREATE TABLE jobs (
    tenant_id       text NOT NULL,
    job_id          text NOT NULL,
    url             text NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    requested_tier  text,
    tier            text,
    attempts        integer NOT NULL DEFAULT 0,
    http_status     integer,
    error_code      text,
    error_message   text,
    final_url       text,
    content_type    text,
    content_bytes   bigint,
    content_sha256  text,
    content_key     text,
    result_event_id text,
    trace_id        text,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, job_id)
);
CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at DESC);
CREATE INDEX jobs_status ON jobs (status) WHERE status IN ('queued', 'running');

CREATE TABLE attempts (
    event_id        text PRIMARY KEY,
    job_id          text NOT NULL,
    tenant_id       text NOT NULL,
    tier            text NOT NULL,
    attempt         integer NOT NULL,
    outcome         text NOT NULL,
    error_code      text,
    http_status     integer,
    bytes           bigint NOT NULL DEFAULT 0,
    duration_ms     integer NOT NULL DEFAULT 0,
    credits         integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL
);
CREATE INDEX attempts_job ON attempts (tenant_id, job_id);
CREATE INDEX attempts_tenant_created ON attempts (tenant_id, created_at);
