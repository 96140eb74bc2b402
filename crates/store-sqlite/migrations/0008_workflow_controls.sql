-- Operators' controls of a workflow (issue 26): paused or not, by whom, when and why.
-- A paused workflow enrols nobody and holds its runs' timers and sends until resumed.
CREATE TABLE workflow_controls (
    workflow TEXT PRIMARY KEY,
    paused   INTEGER NOT NULL,
    by_whom  TEXT NOT NULL,
    at       TEXT NOT NULL,
    reason   TEXT NOT NULL
);
