-- A timer carries its run's contact, so that a claim of due timers hands each back with
-- the contact its unit of work loads, without a lookup in `runs` per timer. Timers
-- stored before this column existed have none: their claim still looks the run up.
ALTER TABLE timers ADD COLUMN contact TEXT COLLATE "C";
