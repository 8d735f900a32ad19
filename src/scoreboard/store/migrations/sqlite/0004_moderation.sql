-- Moderation: bans, an audit of administrative actions, per-user security events,
-- and which revert undid a ledger entry.
CREATE TABLE bans (
    user_id TEXT    PRIMARY KEY,
    at_ms   INTEGER NOT NULL,
    by_sub  TEXT    NOT NULL
) STRICT;

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    admin  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    detail TEXT    NOT NULL
) STRICT;

CREATE TABLE security_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT    NOT NULL,
    at_ms   INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    detail  TEXT    NOT NULL
) STRICT;

CREATE INDEX security_events_by_user ON security_events (user_id, id);

ALTER TABLE ledger ADD COLUMN reverted_by INTEGER;
