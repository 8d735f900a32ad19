-- Many boards. The single board so far becomes the board `default`, season 1; the
-- display name moves to the user (one name on every board); the ledger says which
-- board and season each row belongs to and what kind of write it was.
CREATE TABLE boards (
    id                TEXT    PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    title             TEXT    NOT NULL CHECK (length(title) BETWEEN 1 AND 128),
    sort              TEXT    NOT NULL CHECK (sort IN ('desc', 'asc')),
    operator          TEXT    NOT NULL CHECK (operator IN ('increment', 'best', 'set')),
    reset             TEXT    NOT NULL CHECK (reset IN ('never', 'hour', 'day', 'week', 'month')),
    timezone          TEXT    NOT NULL,
    created_ms        INTEGER NOT NULL,
    deleted_ms        INTEGER,
    season            INTEGER NOT NULL CHECK (season > 0),
    season_started_ms INTEGER NOT NULL
) STRICT;

INSERT INTO boards VALUES (
    'default', 'Scoreboard', 'desc', 'increment', 'never', 'UTC',
    CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), NULL, 1,
    coalesce((SELECT min(at_ms) FROM ledger),
             CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)));

CREATE TABLE users (
    user_id TEXT PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 128),
    name    TEXT CHECK (name IS NULL OR length(name) <= 64)
) STRICT, WITHOUT ROWID;

INSERT INTO users SELECT user_id, name FROM totals WHERE name IS NOT NULL;

-- A user's entry on one season of one board.
CREATE TABLE entries (
    board      TEXT    NOT NULL,
    season     INTEGER NOT NULL,
    user_id    TEXT    NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    score      INTEGER NOT NULL CHECK (score BETWEEN 0 AND 9007199254740991),
    seq        INTEGER NOT NULL CHECK (seq > 0),  -- the ledger id that reached this score
    reached_ms INTEGER NOT NULL,
    PRIMARY KEY (board, season, user_id)
) STRICT, WITHOUT ROWID;

INSERT INTO entries SELECT 'default', 1, user_id, total, seq, reached_ms FROM totals;
DROP TABLE totals;

-- kind: add (an increment: amount is the points), submit (a best/set board's score),
-- revert (amount is the change it made).
CREATE TABLE ledger_v7 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    board       TEXT    NOT NULL,
    season      INTEGER NOT NULL,
    user_id     TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('add', 'submit', 'revert')),
    amount      INTEGER NOT NULL CHECK (abs(amount) <= 9007199254740991),
    at_ms       INTEGER NOT NULL,
    source      TEXT    NOT NULL,
    reverted_by INTEGER
) STRICT;

INSERT INTO ledger_v7
    SELECT id, 'default', 1, user_id,
           CASE WHEN source LIKE 'revert%' THEN 'revert' ELSE 'add' END,
           delta, at_ms, source, reverted_by
    FROM ledger;
DROP TABLE ledger;
ALTER TABLE ledger_v7 RENAME TO ledger;
CREATE INDEX ledger_by_user ON ledger (user_id, board, season, id);
CREATE INDEX ledger_by_user_time ON ledger (user_id, at_ms);

ALTER TABLE tickets ADD COLUMN board TEXT NOT NULL DEFAULT 'default';

-- Small settings the instances share (the cursor key).
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;
