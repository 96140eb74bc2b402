-- Erasures (GDPR Art. 17): the secret salt of the hashes an erasure keeps, and one row
-- per erasure without personal data (when, by whom, a salted hash of the contact's id).
CREATE TABLE privacy_salt (
    salt TEXT NOT NULL
);
INSERT INTO privacy_salt (salt)
VALUES (encode(sha256((gen_random_uuid()::text || gen_random_uuid()::text)::bytea), 'hex'));

CREATE TABLE erasures (
    id       BIGSERIAL PRIMARY KEY,
    subject  TEXT NOT NULL,
    by_whom  TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    removed  JSONB NOT NULL
);
CREATE INDEX erasures_subject ON erasures (subject);
