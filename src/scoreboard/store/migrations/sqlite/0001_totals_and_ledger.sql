-- Per-user totals and the append-only ledger of accepted increments.
CREATE TABLE totals (
    user_id    TEXT    PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 128),
    total      INTEGER NOT NULL CHECK (total BETWEEN 0 AND 9007199254740991),
    seq        INTEGER NOT NULL CHECK (seq > 0),   -- ledger id that reached this total
    reached_ms INTEGER NOT NULL,                   -- when it was reached (unix ms)
    name       TEXT CHECK (name IS NULL OR length(name) <= 64)
) STRICT;

-- AUTOINCREMENT: ids are never reused, so a later entry always has a larger id.
CREATE TABLE ledger (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT    NOT NULL,
    delta   INTEGER NOT NULL CHECK (delta <> 0 AND abs(delta) <= 9007199254740991),
    at_ms   INTEGER NOT NULL,
    source  TEXT    NOT NULL
) STRICT;

CREATE INDEX ledger_by_user ON ledger (user_id, id);
