-- Seasons. Every board's seasons, numbered from 1: a reset closes the current one (its
-- end) and opens the next. The row of a season is unique: a reset commits once however
-- many instances attempt it. A closed season's final standings are stored once
-- (``stored_ms``), ranks included, and never change.
CREATE TABLE seasons (
    board      TEXT    NOT NULL,
    season     INTEGER NOT NULL CHECK (season > 0),
    started_ms INTEGER NOT NULL,
    ended_ms   INTEGER,
    stored_ms  INTEGER,
    PRIMARY KEY (board, season)
) STRICT, WITHOUT ROWID;

INSERT INTO seasons (board, season, started_ms) SELECT id, season, season_started_ms FROM boards;

CREATE TABLE standings (
    board   TEXT    NOT NULL,
    season  INTEGER NOT NULL,
    rank    INTEGER NOT NULL CHECK (rank > 0),
    user_id TEXT    NOT NULL,
    score   INTEGER NOT NULL,
    name    TEXT,
    PRIMARY KEY (board, season, rank)
) STRICT, WITHOUT ROWID;

CREATE UNIQUE INDEX standings_by_user ON standings (board, season, user_id);

-- When each ban held: a closed season's standings leave out whoever was banned when it
-- ended, whatever happens to the ban later.
CREATE TABLE ban_history (
    user_id   TEXT    NOT NULL,
    banned_ms INTEGER NOT NULL,
    lifted_ms INTEGER
) STRICT;

INSERT INTO ban_history (user_id, banned_ms) SELECT user_id, at_ms FROM bans;
CREATE INDEX ban_history_by_user ON ban_history (user_id, banned_ms);
