-- Report counts (issue 21): hourly rows added to in the commit that does what they count,
-- so a report reads rows, never the journal. `hour` is the hour's start, as stored times.
CREATE TABLE report_counts (
    workflow TEXT NOT NULL,
    version  INTEGER NOT NULL,
    metric   TEXT NOT NULL,
    hour     TEXT NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (workflow, version, metric, hour)
) WITHOUT ROWID;

-- Per-message metrics already counted (a second open of one email is not a new unique
-- open).
CREATE TABLE report_once (
    key    TEXT NOT NULL,
    metric TEXT NOT NULL,
    PRIMARY KEY (key, metric)
) WITHOUT ROWID;

-- The open runs per step (a gauge at the epoch hour) of a store that had runs before
-- the counts: from now on each commit moves them.
INSERT INTO report_counts (workflow, version, metric, hour, n)
SELECT workflow, workflow_version, 'waiting:' || json_extract(doc, '$.step'),
       '1970-01-01T00:00:00.000Z', count(*)
FROM runs WHERE status IN ('active', 'waiting') AND json_extract(doc, '$.step') IS NOT NULL
GROUP BY 1, 2, 3;
