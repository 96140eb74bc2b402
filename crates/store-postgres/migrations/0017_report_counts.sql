-- Report counts (issue 21): hourly rows added to in the commit that does what they count,
-- so a report reads rows, never the journal. Each connection adds to its own `shard` of a
-- count (its backend pid modulo 64): concurrent commits of one campaign then do not wait
-- for each other's row lock; a report sums the shards.
CREATE TABLE report_counts (
    workflow TEXT NOT NULL,
    version  INTEGER NOT NULL,
    metric   TEXT NOT NULL,
    hour     TIMESTAMPTZ NOT NULL,
    shard    SMALLINT NOT NULL,
    n        BIGINT NOT NULL,
    PRIMARY KEY (workflow, version, metric, hour, shard)
);

-- Per-message metrics already counted (a second open of one email is not a new unique
-- open).
CREATE TABLE report_once (
    key    TEXT NOT NULL,
    metric TEXT NOT NULL,
    PRIMARY KEY (key, metric)
);

-- The open runs per step (a gauge at the epoch hour) of a store that had runs before
-- the counts: from now on each commit moves them.
INSERT INTO report_counts (workflow, version, metric, hour, shard, n)
SELECT workflow, workflow_version, 'waiting:' || (doc->>'step'), timestamptz 'epoch', 0, count(*)
FROM runs WHERE status IN ('active', 'waiting') AND doc->>'step' IS NOT NULL
GROUP BY 1, 2, 3;
