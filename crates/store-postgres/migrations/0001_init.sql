-- nurture store, Postgres. Everything lives in the `nurture` schema (search_path).
--
-- Queue-like tables (inbox, timers, outbox_pending) are delete-on-claim: no state column
-- in a partial index, so updates stay HOT and vacuum has little to do. For a sharded
-- Postgres (Citus), every table but `counters` and `schedules` distributes by `contact`.

CREATE TABLE contacts (
    id       TEXT PRIMARY KEY,
    email    TEXT UNIQUE,
    doc      JSONB NOT NULL,
    version  BIGINT NOT NULL
);

CREATE TABLE events (
    seq      BIGSERIAL PRIMARY KEY,
    id       TEXT NOT NULL UNIQUE,
    contact  TEXT NOT NULL,
    type     TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    data     JSONB NOT NULL
);
CREATE INDEX events_contact_at ON events (contact, at);

CREATE TABLE inbox (
    seq      BIGINT PRIMARY KEY,
    contact  TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX inbox_at ON inbox (at, seq);
CREATE INDEX inbox_contact ON inbox (contact, at, seq);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    workflow_version INTEGER NOT NULL,
    contact          TEXT NOT NULL,
    status           TEXT NOT NULL,
    doc              JSONB NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    rev              BIGINT NOT NULL
);
CREATE INDEX runs_contact ON runs (contact, workflow);
CREATE INDEX runs_workflow ON runs (workflow, started_at);

CREATE TABLE timers (
    run_id   TEXT PRIMARY KEY,
    due_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX timers_due ON timers (due_at);

CREATE TABLE outbox (
    key        TEXT PRIMARY KEY,
    run_id     TEXT,
    contact    TEXT NOT NULL,
    workflow   TEXT,
    step       TEXT,
    kind       TEXT NOT NULL,
    payload    JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    due_at     TIMESTAMPTZ NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0,
    state      TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT
);
-- Pending entries only, deleted when delivered or failed.
CREATE TABLE outbox_pending (
    key      TEXT PRIMARY KEY,
    due_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX outbox_pending_due ON outbox_pending (due_at);

CREATE TABLE deliveries (
    key      TEXT PRIMARY KEY,
    kind     TEXT NOT NULL,
    contact  TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    record   JSONB NOT NULL
);

CREATE TABLE journal (
    id       BIGSERIAL PRIMARY KEY,
    run_id   TEXT,
    contact  TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    kind     TEXT NOT NULL,
    data     JSONB NOT NULL
);
CREATE INDEX journal_run ON journal (run_id, id);
CREATE INDEX journal_contact ON journal (contact, id);

CREATE TABLE counters (
    name     TEXT PRIMARY KEY,
    value    BIGINT NOT NULL
);

CREATE TABLE schedules (
    workflow   TEXT PRIMARY KEY,
    last_fired TIMESTAMPTZ NOT NULL
);
