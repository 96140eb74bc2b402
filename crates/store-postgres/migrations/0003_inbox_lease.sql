-- Workers claim queued events for a lease, as they do timers and outbox entries, so that
-- several workers split the inbox instead of all processing its head.
ALTER TABLE inbox ADD COLUMN lease_until TIMESTAMPTZ;
