-- Seasons (see the SQLite migration 0008): each board's seasons, their final standings
-- once closed, and when each ban held.
CREATE TABLE seasons (
    board      text    NOT NULL,
    season     integer NOT NULL CHECK (season > 0),
    started_ms bigint  NOT NULL,
    ended_ms   bigint,
    stored_ms  bigint,
    PRIMARY KEY (board, season)
);

INSERT INTO seasons (board, season, started_ms) SELECT id, season, season_started_ms FROM boards;

CREATE TABLE standings (
    board   text    NOT NULL,
    season  integer NOT NULL,
    rank    bigint  NOT NULL CHECK (rank > 0),
    user_id text    NOT NULL,
    score   bigint  NOT NULL,
    name    text,
    PRIMARY KEY (board, season, rank)
);

CREATE UNIQUE INDEX standings_by_user ON standings (board, season, user_id);

CREATE TABLE ban_history (
    user_id   text   NOT NULL,
    banned_ms bigint NOT NULL,
    lifted_ms bigint
);

INSERT INTO ban_history (user_id, banned_ms) SELECT user_id, at_ms FROM bans;
CREATE INDEX ban_history_by_user ON ban_history (user_id, banned_ms);
