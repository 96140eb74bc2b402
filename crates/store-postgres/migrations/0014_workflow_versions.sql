-- Deployed workflow versions (issue 19): every distinct compiled workflow a project
-- deployed, with its source, which workers compile again to run the runs pinned to it
-- (`runs.workflow_version`). Written by deploys only (serialised by an advisory lock),
-- never by the engine's steps. `version` is BIGINT so that every `u32` fits.
CREATE TABLE workflow_versions (
    workflow    TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL,
    hash        TEXT NOT NULL,        -- hex SHA-256 of the workflow's content
    source      TEXT NOT NULL,        -- the workflow file's text
    path        TEXT NOT NULL,        -- the file's path in the project
    deployed_at TIMESTAMPTZ NOT NULL,
    deployed_by TEXT NOT NULL,
    CONSTRAINT workflow_versions_pkey PRIMARY KEY (workflow, version)
);

-- What a worker refuses to do and why (e.g. enrolling with a project older than the
-- latest deployed version), shown by `nurture workers`.
ALTER TABLE workers ADD COLUMN note TEXT;
