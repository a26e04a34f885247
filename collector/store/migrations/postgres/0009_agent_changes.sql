-- hatang collector store, version 9 (PostgreSQL): what changed since the last refresh.
-- agents.changed is the id of the transaction that last wrote the row. Replicas commit
-- out of id order, so a refresh does not continue from the largest id it saw but from
-- its read snapshot's xmin (every transaction below it had ended when the refresh read):
-- the next refresh reads the rows with changed >= that xmin, which includes every
-- commit the previous one could not see yet (a row read twice is recomputed, harmless).
ALTER TABLE agents ADD COLUMN IF NOT EXISTS changed xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS agents_changed ON agents (changed);

-- The throughput results of the sites whose agents changed, read by site.
CREATE INDEX IF NOT EXISTS throughput_results_site ON throughput_results (site, effective_at);
