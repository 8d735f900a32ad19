-- Rank order, so the board can be read from the store while Redis is away.
CREATE INDEX totals_by_rank ON totals (total DESC, seq);
