-- Keys compare byte by byte (collation "C"): ids are ASCII, and every index lookup, sort
-- and join on them would otherwise go through the locale's strcoll, which profiles showed
-- as the largest part of the engine's commits. Only the indexes are rebuilt.
ALTER TABLE contacts ALTER COLUMN id TYPE TEXT COLLATE "C", ALTER COLUMN email TYPE TEXT COLLATE "C";
ALTER TABLE events ALTER COLUMN id TYPE TEXT COLLATE "C", ALTER COLUMN contact TYPE TEXT COLLATE "C";
ALTER TABLE inbox ALTER COLUMN contact TYPE TEXT COLLATE "C";
ALTER TABLE runs ALTER COLUMN id TYPE TEXT COLLATE "C", ALTER COLUMN contact TYPE TEXT COLLATE "C",
    ALTER COLUMN workflow TYPE TEXT COLLATE "C";
ALTER TABLE timers ALTER COLUMN run_id TYPE TEXT COLLATE "C";
ALTER TABLE outbox ALTER COLUMN key TYPE TEXT COLLATE "C";
ALTER TABLE outbox_pending ALTER COLUMN key TYPE TEXT COLLATE "C";
ALTER TABLE deliveries ALTER COLUMN key TYPE TEXT COLLATE "C", ALTER COLUMN contact TYPE TEXT COLLATE "C",
    ALTER COLUMN kind TYPE TEXT COLLATE "C";
ALTER TABLE journal ALTER COLUMN run_id TYPE TEXT COLLATE "C", ALTER COLUMN contact TYPE TEXT COLLATE "C";
ALTER TABLE counters ALTER COLUMN name TYPE TEXT COLLATE "C";
ALTER TABLE schedules ALTER COLUMN workflow TYPE TEXT COLLATE "C";
ALTER TABLE suppressions ALTER COLUMN address TYPE TEXT COLLATE "C";
