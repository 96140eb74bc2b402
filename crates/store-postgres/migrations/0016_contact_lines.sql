-- A contact's own journal lines (scoring rules, segment changes, imports: `run_id` NULL),
-- newest first, for `nurture contacts show` (issue 20). Partial: the lines of runs, which
-- are most of the journal and are read by run, are not in it, so steps pay nothing.
CREATE INDEX journal_contact_lines ON journal (contact, id) WHERE run_id IS NULL;
