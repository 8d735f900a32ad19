-- Detection is one view: each flag once per user and reason, whichever instance raised
-- it; the flags raised before (security events of kind 'flagged') move here.
CREATE TABLE flags (
    user_id  text   NOT NULL,
    reason   text   NOT NULL,
    since_ms bigint NOT NULL,
    PRIMARY KEY (user_id, reason)
);

INSERT INTO flags (user_id, reason, since_ms)
    SELECT user_id, detail, min(at_ms) FROM security_events
    WHERE kind = 'flagged' GROUP BY user_id, detail
    ON CONFLICT DO NOTHING;

-- A user's points in the last minute, counted from the ledger (velocity).
CREATE INDEX ledger_by_user_time ON ledger (user_id, at_ms);
