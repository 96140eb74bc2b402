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

-- API keys with scopes (nurture keys ...): the SHA-256 of the secret, never the secret.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    scopes      TEXT NOT NULL,        -- JSON list of scope names
    created_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);

-- Every export and erasure of a person: who, when, a salted hash of whom, from where.
CREATE TABLE audit_log (
    id       BIGSERIAL PRIMARY KEY,
    at       TIMESTAMPTZ NOT NULL,
    by_whom  TEXT NOT NULL,
    action   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    ip       TEXT
);
