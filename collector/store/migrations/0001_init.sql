-- hatang collector store, version 1.
-- Portable SQL (SQLite and PostgreSQL): times are unix seconds (DOUBLE PRECISION), days are
-- ISO dates as TEXT, report bodies are canonical JSON text. Upserts use
-- INSERT ... ON CONFLICT, which both engines support.

-- Every report ever accepted: the full history that yearly evidence is built from.
CREATE TABLE reports (
    id            TEXT PRIMARY KEY,
    site          TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    observed_at   DOUBLE PRECISION NOT NULL,  -- as the agent sent it
    effective_at  DOUBLE PRECISION NOT NULL,  -- observed_at, or received_at when clock-skewed
    received_at   DOUBLE PRECISION NOT NULL,
    content_hash  TEXT NOT NULL,              -- sha256 of body
    body          TEXT NOT NULL               -- canonical JSON of the report
);
CREATE INDEX reports_site_observed ON reports (site, observed_at);
CREATE INDEX reports_observed ON reports (observed_at);

-- One row per agent: counters and the newest report.
CREATE TABLE agents (
    site               TEXT NOT NULL,
    agent_id           TEXT NOT NULL,
    role               TEXT NOT NULL,
    interval_seconds   DOUBLE PRECISION NOT NULL,
    first_seen         DOUBLE PRECISION NOT NULL,  -- received_at of its first report
    last_effective_at  DOUBLE PRECISION NOT NULL,
    last_observed_at   DOUBLE PRECISION NOT NULL,
    last_received_at   DOUBLE PRECISION NOT NULL,
    reports_received   BIGINT NOT NULL,
    spool_dropped      BIGINT NOT NULL,
    latest_report_id   TEXT NOT NULL,
    PRIMARY KEY (site, agent_id)
);

-- The newest value of each optional section per agent (host, antivirus, firewall,
-- lan_hosts, snmp): a report carries a section only when it was collected, so the latest
-- state is assembled from the newest report that had each one.
CREATE TABLE agent_sections (
    site          TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    section       TEXT NOT NULL,
    effective_at  DOUBLE PRECISION NOT NULL,
    body          TEXT NOT NULL,
    PRIMARY KEY (site, agent_id, section)
);

-- Hourly buckets for windowed "up" and completeness (pruned after store.hourly_retention).
CREATE TABLE network_hourly (
    site       TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    network    TEXT NOT NULL,
    hour       BIGINT NOT NULL,  -- unix seconds of the hour's start
    checks     BIGINT NOT NULL,
    up_checks  BIGINT NOT NULL,
    PRIMARY KEY (site, agent_id, network, hour)
);
CREATE INDEX network_hourly_hour ON network_hourly (hour);

CREATE TABLE agent_hourly (
    site      TEXT NOT NULL,
    agent_id  TEXT NOT NULL,
    hour      BIGINT NOT NULL,
    reports   BIGINT NOT NULL,
    PRIMARY KEY (site, agent_id, hour)
);
CREATE INDEX agent_hourly_hour ON agent_hourly (hour);

-- Daily roll-ups kept for good: a year of history answers queries quickly.
CREATE TABLE network_daily (
    day         TEXT NOT NULL,  -- YYYY-MM-DD, UTC
    site        TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    network     TEXT NOT NULL,
    checks      BIGINT NOT NULL,
    up_checks   BIGINT NOT NULL,
    seconds_up  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (day, site, agent_id, network)
);

CREATE TABLE host_daily (
    day                    TEXT NOT NULL,
    site                   TEXT NOT NULL,
    agent_id               TEXT NOT NULL,
    hostname               TEXT,
    reports                BIGINT NOT NULL,
    antivirus_state        TEXT,
    antivirus_effective_at DOUBLE PRECISION,
    PRIMARY KEY (day, site, agent_id)
);

-- Agent tokens: only the SHA-256 of the secret is stored.
CREATE TABLE tokens (
    token_id      TEXT PRIMARY KEY,
    token_hash    TEXT NOT NULL UNIQUE,
    site          TEXT NOT NULL,
    created_at    DOUBLE PRECISION NOT NULL,
    revoked_at    DOUBLE PRECISION,
    last_used_at  DOUBLE PRECISION,
    note          TEXT
);

-- Rejected requests by reason, across restarts.
CREATE TABLE rejections (
    reason  TEXT PRIMARY KEY,
    count   BIGINT NOT NULL
);
