-- Due timers are claimed in (due_at, run_id) order; with the index in that order a claim
-- reads only the rows it takes, even when a million timers share one due time.
CREATE INDEX timers_due_run ON timers (due_at, run_id);
DROP INDEX timers_due;

-- The inbox keeps each event's time, so the oldest queued events are read from an index
-- instead of joining and sorting the whole queue on every claim.
ALTER TABLE inbox ADD COLUMN at TEXT;
UPDATE inbox SET at = (SELECT e.at FROM events e WHERE e.seq = inbox.seq);
CREATE INDEX inbox_at ON inbox (at, seq);
