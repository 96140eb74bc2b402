-- The journal is partitioned by month of `at` (issue 27 item 4): `nurture store compact`
-- replaces the lines of ended runs by summaries, then copies what a month that has ended
-- keeps into a fresh partition and drops the old one, so the space of the deleted rows
-- goes back to the file system instead of waiting, as dead rows, for later rows of that
-- month (which never come). The store creates this month's partition and the next two
-- (`partitions.rs`); a row of a month without its own lands in `journal_default`, and
-- compaction moves the months it finds there into their own. The table has no primary
-- key (0010), so partitioning it constrains nothing else.
ALTER TABLE journal RENAME TO journal_unpartitioned;
ALTER INDEX journal_run RENAME TO journal_run_unpartitioned;
ALTER INDEX journal_contact_lines RENAME TO journal_contact_lines_unpartitioned;
CREATE TABLE journal (
    id       BIGINT NOT NULL DEFAULT nextval('journal_id_seq'),
    run_id   TEXT COLLATE "C",
    contact  TEXT COLLATE "C" NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    kind     TEXT NOT NULL,
    data     BYTEA NOT NULL
) PARTITION BY RANGE (at);
ALTER SEQUENCE journal_id_seq OWNED BY journal.id;
CREATE INDEX journal_run ON journal (run_id, id);
CREATE INDEX journal_contact_lines ON journal (contact, id) WHERE run_id IS NULL;
CREATE TABLE journal_default PARTITION OF journal DEFAULT;
-- A partition for every month the journal has rows of, and this month and the next two,
-- before the rows are copied: each row goes straight to its month, in one pass.
DO $$
DECLARE
    m timestamptz;
BEGIN
    FOR m IN
        SELECT DISTINCT date_trunc('month', at, 'UTC') FROM journal_unpartitioned
        UNION
        SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => k))
            AT TIME ZONE 'UTC'
        FROM generate_series(0, 2) AS k
    LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF journal FOR VALUES FROM (%L) TO (%L)',
            'journal_' || to_char(m AT TIME ZONE 'UTC', 'YYYY_MM'),
            m,
            (m AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC'
        );
    END LOOP;
END
$$;
INSERT INTO journal (id, run_id, contact, at, kind, data)
    SELECT id, run_id, contact, at, kind, data FROM journal_unpartitioned;
DROP TABLE journal_unpartitioned;
-- The partitions rows were deleted from (by retention), to be rewritten once their month
-- has ended; written in the deleting transaction, removed by the rewrite's.
CREATE TABLE journal_reclaim (
    partition TEXT COLLATE "C" PRIMARY KEY
);
