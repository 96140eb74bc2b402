-- A unit of work loads, per workflow, a contact's latest run (see `UnitData::runs`; the
-- engine stamps a new run after every earlier one of its workflow, so the latest is the
-- open one if there is one). This index hands them over in that order: the first entry
-- of each workflow is the one, read without a sort.
DROP INDEX IF EXISTS runs_contact;
CREATE INDEX runs_contact ON runs (contact, workflow, started_at DESC, id DESC);
