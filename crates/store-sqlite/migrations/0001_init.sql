-- nurture store, SQLite. Times are RFC 3339 UTC text with milliseconds (sortable).

CREATE TABLE contacts (
    id       TEXT PRIMARY KEY,
    email    TEXT UNIQUE,
    doc      TEXT NOT NULL,           -- JSON of the Contact
    version  INTEGER NOT NULL
);

-- Append-only event history (activity(), replay); `id` is the idempotency key.
CREATE TABLE events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT NOT NULL UNIQUE,
    contact  TEXT NOT NULL,
    type     TEXT NOT NULL,
    at       TEXT NOT NULL,
    data     TEXT NOT NULL
);
CREATE INDEX events_contact_at ON events (contact, at);

-- Events not processed yet: a row is deleted in the transaction that processes it.
CREATE TABLE inbox (
    seq      INTEGER PRIMARY KEY
);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    workflow_version INTEGER NOT NULL,
    contact          TEXT NOT NULL,
    status           TEXT NOT NULL,
    doc              TEXT NOT NULL,   -- JSON of the Run
    started_at       TEXT NOT NULL,
    rev              INTEGER NOT NULL
);
CREATE INDEX runs_contact ON runs (contact, workflow);
CREATE INDEX runs_workflow ON runs (workflow, started_at);

-- One pending timer per run, deleted when it fires.
CREATE TABLE timers (
    run_id   TEXT PRIMARY KEY,
    due_at   TEXT NOT NULL
);
CREATE INDEX timers_due ON timers (due_at);

CREATE TABLE outbox (
    key        TEXT PRIMARY KEY,      -- idempotency key of (run, step, action)
    run_id     TEXT,
    contact    TEXT NOT NULL,
    workflow   TEXT,
    step       TEXT,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    due_at     TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    state      TEXT NOT NULL DEFAULT 'pending',   -- pending | delivered | failed
    last_error TEXT
);
CREATE INDEX outbox_pending ON outbox (state, due_at);

-- What each delivery channel recorded; at most one row per key.
CREATE TABLE deliveries (
    key      TEXT PRIMARY KEY,
    kind     TEXT NOT NULL,
    contact  TEXT NOT NULL,
    at       TEXT NOT NULL,
    record   TEXT NOT NULL
);

CREATE TABLE journal (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT,
    contact  TEXT NOT NULL,
    at       TEXT NOT NULL,
    kind     TEXT NOT NULL,
    data     TEXT NOT NULL
);
CREATE INDEX journal_run ON journal (run_id, id);
CREATE INDEX journal_contact ON journal (contact, id);

CREATE TABLE counters (
    name     TEXT PRIMARY KEY,
    value    INTEGER NOT NULL
);

CREATE TABLE schedules (
    workflow   TEXT PRIMARY KEY,
    last_fired TEXT NOT NULL
);
