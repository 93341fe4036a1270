-- The job's story: every hand-over from one tier to the next (scrape.escalations), beside the
-- attempts. Written idempotently by event id, like attempts.
CREATE TABLE escalations (
    event_id        text PRIMARY KEY,
    job_id          text NOT NULL,
    tenant_id       text NOT NULL,
    from_tier       text NOT NULL,
    to_tier         text NOT NULL,
    reason          text NOT NULL,
    http_status     integer,
    marker          text,
    created_at      timestamptz NOT NULL
);
CREATE INDEX escalations_job ON escalations (tenant_id, job_id);
