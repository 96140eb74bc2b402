-- More room in the pages of the rows the engine updates on every step, so that their
-- updates stay HOT (the new version on the same page: no new index entries, no index
-- bloat, less WAL). At fillfactor 80 about half of them were not, in the benchmark's
-- 100,000 contacts walking a campaign: 43% of the inbox's lease updates, 49% of the runs'
-- and 51% of the contacts' updates were HOT; at these settings all of them were, and the
-- steps per second rose by a tenth (65 for runs and contacts gave 79-82% and no gain).
--
-- inbox: a claim leases its rows (`lease_until`, in no index): each row's one new version
-- needs as much room again as the row. Half-empty pages hold it.
ALTER TABLE inbox SET (fillfactor = 45);
-- runs, contacts: a few updates each per commit batch. The tables do not grow by as much
-- as the free space suggests: their dead versions filled the pages at 80 as well.
ALTER TABLE runs SET (fillfactor = 50);
ALTER TABLE contacts SET (fillfactor = 50);
-- (Applies to pages written from now on; `VACUUM FULL` or pg_repack rewrites old ones.)
