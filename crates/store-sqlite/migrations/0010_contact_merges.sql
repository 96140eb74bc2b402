-- Anonymous visitors merged into contacts (website tracking): each merged id is an alias
-- of the contact it was merged into, so later events for it go to that contact.
CREATE TABLE contact_merges (
    from_id  TEXT PRIMARY KEY,
    into_id  TEXT NOT NULL,
    at       TEXT NOT NULL,
    moved    INTEGER NOT NULL,
    source   TEXT NOT NULL
);
