-- Accounts: several API keys per tenant (rotation without downtime; revocation), tenant settings
-- (enabled, rate, concurrent jobs) and a credit ledger whose sum is meant to equal the balance.

-- Keys move to api_keys. tenants.api_key_sha256 is no longer read or written: it stays (nullable)
-- only so that gateways of the previous release keep answering during a rolling upgrade; a later
-- migration drops it.
CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,  -- public, shown by `tenants show`: k_ + 12 hex digits
    tenant_id   text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    key_sha256  text NOT NULL UNIQUE,
    label       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

INSERT INTO api_keys (key_id, tenant_id, key_sha256, label, created_at)
SELECT 'k_' || substr(md5(tenant_id || random()::text || clock_timestamp()::text), 1, 12),
       tenant_id, api_key_sha256, 'migrated', created_at
FROM tenants WHERE api_key_sha256 IS NOT NULL;

ALTER TABLE tenants ALTER COLUMN api_key_sha256 DROP NOT NULL;
COMMENT ON COLUMN tenants.api_key_sha256 IS 'deprecated (0007): keys live in api_keys';

-- Settings; NULL = the deployment's default. Enforced by the gateway from part 2 of accounts on.
ALTER TABLE tenants
    ADD COLUMN enabled     boolean NOT NULL DEFAULT true,
    ADD COLUMN rate_per_s  double precision CHECK (rate_per_s > 0),
    ADD COLUMN max_jobs    integer CHECK (max_jobs > 0);

-- Every change of tenants.credits gets a row here in the same transaction.
CREATE TABLE credit_ledger (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    delta       bigint NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('grant', 'topup', 'correction', 'charge')),
    job_id      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_ledger_tenant ON credit_ledger (tenant_id, created_at);
-- A job is charged once per reason, however often its events are redelivered.
CREATE UNIQUE INDEX credit_ledger_job ON credit_ledger (tenant_id, job_id, reason)
    WHERE job_id IS NOT NULL;

-- Opening balances, so that balance = sum(ledger) holds from here on.
INSERT INTO credit_ledger (tenant_id, delta, reason, created_at)
SELECT tenant_id, credits, 'grant', now() FROM tenants WHERE credits <> 0;
