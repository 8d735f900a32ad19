-- The schema of SQLite migrations 0001-0004, for PostgreSQL.
CREATE TABLE totals (
    user_id    text   PRIMARY KEY CHECK (char_length(user_id) BETWEEN 1 AND 128),
    total      bigint NOT NULL CHECK (total BETWEEN 0 AND 9007199254740991),
    seq        bigint NOT NULL CHECK (seq > 0),   -- ledger id that reached this total
    reached_ms bigint NOT NULL,
    name       text   CHECK (name IS NULL OR char_length(name) <= 64)
);

CREATE TABLE ledger (
    id          bigserial PRIMARY KEY,
    user_id     text      NOT NULL,
    delta       bigint    NOT NULL CHECK (delta <> 0 AND abs(delta) <= 9007199254740991),
    at_ms       bigint    NOT NULL,
    source      text      NOT NULL,
    reverted_by bigint
);
CREATE INDEX ledger_by_user ON ledger (user_id, id);

CREATE TABLE idempotency (
    user_id     text    NOT NULL,
    key         text    NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    fingerprint text    NOT NULL,
    status      integer NOT NULL,
    body        bytea   NOT NULL,
    created_ms  bigint  NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_by_age ON idempotency (created_ms);

CREATE TABLE tickets (
    id            text   PRIMARY KEY CHECK (char_length(id) BETWEEN 16 AND 64),
    user_id       text   NOT NULL,
    kind          text   NOT NULL,
    points        bigint NOT NULL CHECK (points BETWEEN 1 AND 9007199254740991),
    created_ms    bigint NOT NULL,
    not_before_ms bigint NOT NULL,
    expires_ms    bigint NOT NULL CHECK (expires_ms > not_before_ms),
    redeemed_ms   bigint
);
CREATE INDEX tickets_by_expiry ON tickets (expires_ms);

CREATE TABLE bans (
    user_id text   PRIMARY KEY,
    at_ms   bigint NOT NULL,
    by_sub  text   NOT NULL
);

CREATE TABLE audit (
    id     bigserial PRIMARY KEY,
    at_ms  bigint    NOT NULL,
    admin  text      NOT NULL,
    action text      NOT NULL,
    target text      NOT NULL,
    detail text      NOT NULL
);

CREATE TABLE security_events (
    id      bigserial PRIMARY KEY,
    user_id text      NOT NULL,
    at_ms   bigint    NOT NULL,
    kind    text      NOT NULL,
    detail  text      NOT NULL
);
CREATE INDEX security_events_by_user ON security_events (user_id, id);
