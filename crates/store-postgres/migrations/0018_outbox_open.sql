-- The operations page counts the outbox entries that still need something; delivered
-- and skipped ones (nearly all) stay out of this index.
CREATE INDEX outbox_open ON outbox (state) WHERE state IN ('pending', 'failed', 'ambiguous');
