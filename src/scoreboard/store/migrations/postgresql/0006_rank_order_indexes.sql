-- The rank-order indexes, partial on a condition every entry meets (score >= 0, a
-- CHECK): only queries that read in rank order say it (store/sql.py, _IN_ORDER), so a
-- batch's look-up of entries by key can only take the primary key. Without statistics
-- (a new database, a table that just grew) the planner had taken a rank-order index
-- for it, reading every entry of the board per user.
DROP INDEX entries_desc;
DROP INDEX entries_asc;
CREATE INDEX entries_desc ON entries (board, season, score DESC, seq) WHERE score >= 0;
CREATE INDEX entries_asc ON entries (board, season, score, seq) WHERE score >= 0;
-- Fresh statistics as boards grow (the default waits for 10% of the table to change).
ALTER TABLE entries SET (autovacuum_analyze_scale_factor = 0.02);
