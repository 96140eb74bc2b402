-- Segments that follow time (`activity()` windows, `now`, dates): one timer per contact,
-- due when its segment membership may next change by the clock alone, set or removed by
-- the commit that re-evaluates the contact; claimed for a lease like the runs' timers.
CREATE TABLE segment_timers (
    contact  TEXT COLLATE "C" PRIMARY KEY,
    due_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX segment_timers_due ON segment_timers (due_at);

-- Segment membership as last evaluated (the contacts' `segments`), so that a schedule's
-- audience is read from an index instead of evaluating every contact at each firing.
CREATE TABLE segment_members (
    segment  TEXT COLLATE "C" NOT NULL,
    contact  TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (segment, contact)
);
INSERT INTO segment_members (segment, contact)
    SELECT DISTINCT s.value, c.id FROM contacts c,
        json_array_elements_text(CASE WHEN json_typeof(c.doc->'segments') = 'array'
            THEN c.doc->'segments' ELSE '[]'::json END) AS s(value)
    ON CONFLICT DO NOTHING;
