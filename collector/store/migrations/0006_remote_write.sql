-- Remote-write push queue (docs/late-data.md): samples of late reports, written in the same
-- transaction as the reports, sent to Prometheus at their observation times.
-- Portable SQL (SQLite and PostgreSQL); IF NOT EXISTS: re-applying it (a store whose
-- schema_version was rolled back by hand) changes nothing.

-- One row per (series, timestamp): the primary key is the rule "one value per series per
-- timestamp" (a replayed report adds nothing). sent_at NULL = pending; a row acknowledged
-- by the receiver keeps its series for a while (trailing staleness markers, see
-- collector/late.py) and is then pruned. A row is claimed for one send by lease_owner
-- until lease_until, so several collector replicas never send the same row at once.
CREATE TABLE IF NOT EXISTS remote_write_queue (
    series       TEXT NOT NULL,              -- canonical label set, JSON [[name, value], ...]
    ts_ms        BIGINT NOT NULL,            -- observation time, Unix milliseconds
    site         TEXT NOT NULL,
    value        DOUBLE PRECISION NOT NULL,
    stale        INTEGER NOT NULL DEFAULT 0, -- 1: the Prometheus staleness marker (value unused)
    enqueued_at  DOUBLE PRECISION NOT NULL,
    lease_owner  TEXT,
    lease_until  DOUBLE PRECISION NOT NULL DEFAULT 0,
    sent_at      DOUBLE PRECISION,
    PRIMARY KEY (series, ts_ms)
);
CREATE INDEX IF NOT EXISTS remote_write_queue_pending ON remote_write_queue (sent_at, ts_ms);
CREATE INDEX IF NOT EXISTS remote_write_queue_site ON remote_write_queue (site, ts_ms);
CREATE INDEX IF NOT EXISTS remote_write_queue_lease ON remote_write_queue (lease_owner);

-- Samples sent, and not sent by reason (too_old, queue_full, http_400 ...), across restarts.
CREATE TABLE IF NOT EXISTS remote_write_counts (
    reason  TEXT PRIMARY KEY,
    count   BIGINT NOT NULL
);

-- "Did the collector hold a fresh observation of this site at time t?" is asked for each
-- late report (the one rule); this answers it without scanning the site's history.
CREATE INDEX IF NOT EXISTS reports_site_effective ON reports (site, effective_at);
