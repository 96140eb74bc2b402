-- Erasures (GDPR Art. 17): the secret salt of the hashes an erasure keeps, and one row
-- per erasure without personal data (when, by whom, a salted hash of the contact's id).
CREATE TABLE privacy_salt (
    salt TEXT NOT NULL
);
INSERT INTO privacy_salt (salt) VALUES (lower(hex(randomblob(32))));

CREATE TABLE erasures (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    subject  TEXT NOT NULL,
    by_whom  TEXT NOT NULL,
    at       TEXT NOT NULL,
    removed  TEXT NOT NULL            -- JSON: rows removed per kind
);
CREATE INDEX erasures_subject ON erasures (subject);
