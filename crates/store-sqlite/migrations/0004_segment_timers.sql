-- Segments that follow time (`activity()` windows, `now`, dates): one timer per contact,
-- due when its segment membership may next change by the clock alone, set or removed by
-- the commit that re-evaluates the contact; claimed for a lease like the runs' timers.
CREATE TABLE segment_timers (
    contact  TEXT PRIMARY KEY,
    due_at   TEXT NOT NULL
);
CREATE INDEX segment_timers_due ON segment_timers (due_at, contact);

-- Segment membership as last evaluated (the contacts' `segments`), so that a schedule's
-- audience is read from an index instead of evaluating every contact at each firing.
CREATE TABLE segment_members (
    segment  TEXT NOT NULL,
    contact  TEXT NOT NULL,
    PRIMARY KEY (segment, contact)
) WITHOUT ROWID;
INSERT OR IGNORE INTO segment_members (segment, contact)
    SELECT j.value, c.id FROM contacts c, json_each(c.doc, '$.segments') j
    WHERE json_type(c.doc, '$.segments') = 'array';
