-- The learned router's decision for tier=auto jobs, and why.
ALTER TABLE jobs ADD COLUMN router_reason text;
