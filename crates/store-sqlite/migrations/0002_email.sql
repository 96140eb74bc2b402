-- Addresses that must not receive marketing email (unsubscribed, hard-bounced,
-- complained), checked when the outbox entry is claimed.
CREATE TABLE suppressions (
    address  TEXT PRIMARY KEY,        -- lower-cased email address
    reason   TEXT NOT NULL,
    at       TEXT NOT NULL
);
-- The frequency cap counts a contact's recent emails.
CREATE INDEX deliveries_contact ON deliveries (contact, kind, at);
