-- The processes executing steps (`nurture worker`, `nurture run`), each refreshing its row
-- every second. Workers size their concurrency from the number alive: the database's
-- concurrent group commits (`NURTURE_PG_LANES`) are a budget shared by all of them, so
-- adding workers spreads the same load over more processes instead of piling more
-- transactions onto the database. `nurture workers` lists them.
CREATE TABLE workers (
    id         TEXT COLLATE "C" PRIMARY KEY,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    seen_at    TIMESTAMPTZ NOT NULL,
    lanes      INTEGER NOT NULL
);
