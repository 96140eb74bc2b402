-- Send limits enforced by the claim of an outbox entry (runtime/src/store/limits.rs).
--
-- One row per send to a person on a capped channel (`email`, or a plugin's declared
-- channel such as `sms`), written by the claim that takes it and removed again when the
-- attempt does not deliver: the frequency cap counts these.
CREATE TABLE contact_sends (
    key      TEXT COLLATE "C" PRIMARY KEY,   -- the outbox key
    contact  TEXT COLLATE "C" NOT NULL,
    channel  TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX contact_sends_contact ON contact_sends (contact, at);
-- The emails delivered before this table existed still count.
INSERT INTO contact_sends (key, contact, channel, at)
    SELECT key, contact, 'email', at FROM deliveries WHERE kind = 'email';

-- Sends per channel per rate window (start in milliseconds since the epoch), counted
-- with a conditional increment; old windows are pruned by the claims.
CREATE TABLE rate_buckets (
    channel      TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    PRIMARY KEY (channel, window_start)
);
