-- Many boards (see the SQLite migration 0007): the single board becomes `default`,
-- season 1; names move to users; the ledger gains board, season and kind.
CREATE TABLE boards (
    id                text    PRIMARY KEY CHECK (char_length(id) BETWEEN 1 AND 64),
    title             text    NOT NULL CHECK (char_length(title) BETWEEN 1 AND 128),
    sort              text    NOT NULL CHECK (sort IN ('desc', 'asc')),
    operator          text    NOT NULL CHECK (operator IN ('increment', 'best', 'set')),
    reset             text    NOT NULL CHECK (reset IN ('never', 'hour', 'day', 'week', 'month')),
    timezone          text    NOT NULL,
    created_ms        bigint  NOT NULL,
    deleted_ms        bigint,
    season            integer NOT NULL CHECK (season > 0),
    season_started_ms bigint  NOT NULL
);

INSERT INTO boards VALUES (
    'default', 'Scoreboard', 'desc', 'increment', 'never', 'UTC',
    (extract(epoch FROM clock_timestamp()) * 1000)::bigint, NULL, 1,
    coalesce((SELECT min(at_ms) FROM ledger),
             (extract(epoch FROM clock_timestamp()) * 1000)::bigint));

CREATE TABLE users (
    user_id text PRIMARY KEY CHECK (char_length(user_id) BETWEEN 1 AND 128),
    name    text CHECK (name IS NULL OR char_length(name) <= 64)
);

INSERT INTO users SELECT user_id, name FROM totals WHERE name IS NOT NULL;

CREATE TABLE entries (
    board      text    NOT NULL,
    season     integer NOT NULL,
    user_id    text    NOT NULL CHECK (char_length(user_id) BETWEEN 1 AND 128),
    score      bigint  NOT NULL CHECK (score BETWEEN 0 AND 9007199254740991),
    seq        bigint  NOT NULL CHECK (seq > 0),
    reached_ms bigint  NOT NULL,
    PRIMARY KEY (board, season, user_id)
);

INSERT INTO entries SELECT 'default', 1, user_id, total, seq, reached_ms FROM totals;
DROP TABLE totals;
-- Rank order both ways, so a board is read from the store while Redis is away.
CREATE INDEX entries_desc ON entries (board, season, score DESC, seq);
CREATE INDEX entries_asc ON entries (board, season, score, seq);

ALTER TABLE ledger ADD COLUMN board text NOT NULL DEFAULT 'default';
ALTER TABLE ledger ADD COLUMN season integer NOT NULL DEFAULT 1;
ALTER TABLE ledger ADD COLUMN kind text;
UPDATE ledger SET kind = CASE WHEN source LIKE 'revert%' THEN 'revert' ELSE 'add' END;
ALTER TABLE ledger ALTER COLUMN kind SET NOT NULL;
ALTER TABLE ledger ADD CHECK (kind IN ('add', 'submit', 'revert'));
ALTER TABLE ledger ALTER COLUMN board DROP DEFAULT;
ALTER TABLE ledger ALTER COLUMN season DROP DEFAULT;
ALTER TABLE ledger DROP CONSTRAINT ledger_delta_check;
ALTER TABLE ledger RENAME COLUMN delta TO amount;
ALTER TABLE ledger ADD CHECK (abs(amount) <= 9007199254740991);
DROP INDEX ledger_by_user;
CREATE INDEX ledger_by_user ON ledger (user_id, board, season, id);

ALTER TABLE tickets ADD COLUMN board text NOT NULL DEFAULT 'default';

CREATE TABLE meta (
    name  text PRIMARY KEY,
    value text NOT NULL
);
