-- Deployed workflow versions (issue 19): every distinct compiled workflow a project
-- deployed, with its source, which workers compile again to run the runs pinned to it
-- (`runs.workflow_version`). Written by deploys only, never by the engine's steps.
CREATE TABLE workflow_versions (
    workflow    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    hash        TEXT NOT NULL,        -- hex SHA-256 of the workflow's content
    source      TEXT NOT NULL,        -- the workflow file's text
    path        TEXT NOT NULL,        -- the file's path in the project
    deployed_at TEXT NOT NULL,
    deployed_by TEXT NOT NULL,
    PRIMARY KEY (workflow, version)
);
