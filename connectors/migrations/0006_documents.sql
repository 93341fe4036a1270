-- Derived formats of a page (markdown, links...): one object each; the manifest lists them.
ALTER TABLE jobs ADD COLUMN documents jsonb;
-- The result cache (connectors/cache.py): a succeeded job's fetch identity and response
-- headers; a job answered from the cache names the job it came from.
ALTER TABLE jobs ADD COLUMN cache_key text;
ALTER TABLE jobs ADD COLUMN cached_from text;
ALTER TABLE jobs ADD COLUMN response_headers jsonb;
CREATE INDEX jobs_cache_idx ON jobs (cache_key, finished_at DESC)
    WHERE status = 'succeeded' AND cache_key IS NOT NULL AND cached_from IS NULL;
