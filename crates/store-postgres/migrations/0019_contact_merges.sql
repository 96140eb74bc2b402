-- Anonymous visitors merged into contacts (website tracking): each merged id is an alias
-- of the contact it was merged into, so later events for it go to that contact.
CREATE TABLE contact_merges (
    from_id  TEXT COLLATE "C" PRIMARY KEY,
    into_id  TEXT COLLATE "C" NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    moved    BIGINT NOT NULL,
    source   TEXT NOT NULL
);
