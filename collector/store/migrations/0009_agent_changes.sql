-- hatang collector store, version 9: what changed since the last snapshot refresh.
-- Every write of an agents row (each accepted report writes its agent's) sets
-- agents.changed to a number above every number written before it: SQLite has one
-- writer, so commit order is number order, and a refresh that saw numbers up to N reads
-- only the rows above N (with the sections, window buckets and roll-ups of just those
-- agents) instead of every agent. The column itself is added by the store's code just
-- before this file runs (SQLite has no ADD COLUMN IF NOT EXISTS, and a migration applied
-- again must change nothing); PostgreSQL has its own variant (migrations/postgres/).
CREATE INDEX IF NOT EXISTS agents_changed ON agents (changed);

-- The throughput results of the sites whose agents changed, read by site.
CREATE INDEX IF NOT EXISTS throughput_results_site ON throughput_results (site, effective_at);
