-- The journal's index by run is on `run_id` alone, and both indexes are built full
-- (issue 27 item 4). A run's rows are read whole and sorted by `id` after the index
-- finds them (a run has tens of rows), so `id` in the key bought nothing, and it made
-- every entry unique: without it B-tree deduplication keeps a run id once for all its
-- rows (and the rows about a contact alone, whose run is NULL, in posting lists).
-- `fillfactor = 100`: an index built over a month that has ended (by compaction's
-- rewrite) gets no more rows, so the 10 % a build leaves free on each page stays empty;
-- inserts of random run ids split pages in the middle either way. Measured on bench (i):
-- the index of a compacted month 344,064 -> 204,800 bytes. Rebuilds both indexes of
-- every partition once.
DROP INDEX journal_run;
CREATE INDEX journal_run ON journal (run_id) WITH (fillfactor = 100);
DROP INDEX journal_contact_lines;
CREATE INDEX journal_contact_lines ON journal (contact, id) WITH (fillfactor = 100)
    WHERE run_id IS NULL;
