-- Browser tiers can store a screenshot (PNG) beside the content.
ALTER TABLE jobs ADD COLUMN screenshot_key text;
