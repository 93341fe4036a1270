-- The job's story: the egress pool each attempt went through (Metering version 2).
ALTER TABLE attempts ADD COLUMN egress_pool text;
