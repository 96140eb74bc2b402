-- A contact's rows found by index where they were found by reading whole tables: the
-- report's last email of a contact (every provider bounce or complaint that names no
-- message, in the engine's transaction), the outbox and segment rows an erasure deletes,
-- and the visitors merged into a contact (erasure, export). Each of these read every row
-- of its table, whose size grows with every send and every contact.
CREATE INDEX outbox_contact ON outbox (contact, due_at);
CREATE INDEX segment_members_contact ON segment_members (contact);
CREATE INDEX contact_merges_into ON contact_merges (into_id);
