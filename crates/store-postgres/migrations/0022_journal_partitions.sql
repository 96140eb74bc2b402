-- The journal is partitioned by month of `at` (issue 27 item 4): `nurture store compact`
-- replaces the lines of ended runs by summaries, then copies what a month keeps into a
-- fresh partition and drops the old one, so the space of the deleted rows goes back to
-- the file system at once instead of waiting, as dead rows, for later rows to reuse it.
-- Months are created ahead by the store (`partitions.rs`: this month and the next two,
-- at every start and compaction); a row of a month without its partition lands in
-- `journal_default`, and compaction moves a month it finds there into its own partition.
-- The rows written before this migration land there too. The table has no primary key
-- (0010), so partitioning it constrains nothing else.
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
INSERT INTO journal (id, run_id, contact, at, kind, data)
    SELECT id, run_id, contact, at, kind, data FROM journal_unpartitioned;
DROP TABLE journal_unpartitioned;
