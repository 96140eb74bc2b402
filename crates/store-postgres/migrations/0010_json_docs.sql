-- Documents the engine rewrites whole on every step (a contact, a run) and the journal it
-- appends are stored as `json` (the text, checked to be JSON) rather than `jsonb`: they
-- are always written and read whole, never searched inside by the engine, and `jsonb`
-- costs a parse into its binary form (keys sorted) on every write and a rendering back
-- to text on every read. SQL operators (`->`, `->>`) work on `json` too; cast to `jsonb`
-- for containment queries.
ALTER TABLE contacts ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE runs ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE journal ALTER COLUMN data TYPE json USING data::json;
-- The journal is read by run only (`journal_run`, in `id` order); an index of its ids
-- alone was one more index entry per row written, used by nothing.
ALTER TABLE journal DROP CONSTRAINT journal_pkey;
