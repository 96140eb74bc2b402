-- Operators' controls of a workflow (issue 26): paused or not, by whom, when and why.
-- A paused workflow enrols nobody and holds its runs' timers and sends until resumed.
CREATE TABLE workflow_controls (
    workflow TEXT COLLATE "C" PRIMARY KEY,
    paused   BOOLEAN NOT NULL,
    by_whom  TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    reason   TEXT NOT NULL
);
