-- Credits that hold (connectors/accounts.py, the results sink): a job's credits are reserved
-- when the gateway accepts it and settled when it ends; balances never pay twice.

-- reserved: credits held by accepted jobs not ended yet; open_jobs: how many such jobs.
-- What a tenant may still spend is credits - reserved.
-- rate_tokens, rate_at: the tenant's submission token bucket (connectors/accounts.py).
ALTER TABLE tenants
    ADD COLUMN reserved    bigint  NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    ADD COLUMN open_jobs   integer NOT NULL DEFAULT 0 CHECK (open_jobs >= 0),
    ADD COLUMN rate_tokens double precision,
    ADD COLUMN rate_at     timestamptz;

CREATE TABLE reservations (
    tenant_id   text NOT NULL,
    job_id      text NOT NULL,
    amount      bigint NOT NULL CHECK (amount >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz,
    PRIMARY KEY (tenant_id, job_id)
);
CREATE INDEX reservations_open ON reservations (tenant_id, created_at) WHERE released_at IS NULL;

-- What each job was charged (settled with its final result), and whether an attempt was
-- answered from the result cache (its price differs).
ALTER TABLE jobs ADD COLUMN credits integer;
ALTER TABLE attempts ADD COLUMN cache_hit boolean NOT NULL DEFAULT false;

-- Per-tenant daily usage, added to once per new attempt row (a replayed metering event adds
-- nothing): what GET /v1/usage and `scrapifie usage` read.
CREATE TABLE usage_daily (
    tenant_id   text NOT NULL,
    day         date NOT NULL,
    tier        text NOT NULL,
    outcome     text NOT NULL,
    error_code  text NOT NULL DEFAULT '',
    attempts    bigint NOT NULL DEFAULT 0,
    credits     bigint NOT NULL DEFAULT 0,
    bytes       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, tier, outcome, error_code)
);
INSERT INTO usage_daily
SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, tier, outcome, coalesce(error_code, ''),
       count(*), sum(credits), sum(bytes)
FROM attempts GROUP BY 1, 2, 3, 4, 5;
