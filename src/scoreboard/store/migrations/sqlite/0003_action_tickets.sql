-- Action tickets: the server decides what an action is worth; a ticket redeems once.
CREATE TABLE tickets (
    id            TEXT    PRIMARY KEY CHECK (length(id) BETWEEN 16 AND 64),
    user_id       TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    points        INTEGER NOT NULL CHECK (points BETWEEN 1 AND 9007199254740991),
    created_ms    INTEGER NOT NULL,
    not_before_ms INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL CHECK (expires_ms > not_before_ms),
    redeemed_ms   INTEGER
) STRICT, WITHOUT ROWID;

CREATE INDEX tickets_by_expiry ON tickets (expires_ms);
