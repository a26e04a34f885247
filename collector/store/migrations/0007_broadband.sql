-- hatang collector store, version 7: line speed and network use (issue 13).

-- Every throughput test result, kept for the broadband window (the median of the window's
-- results judges a site); filed under the report's effective time like the windows.
CREATE TABLE IF NOT EXISTS throughput_results (
    report_id         TEXT NOT NULL,
    network           TEXT NOT NULL,
    target            TEXT NOT NULL,
    site              TEXT NOT NULL,
    agent_id          TEXT NOT NULL,
    effective_at      DOUBLE PRECISION NOT NULL,
    up                BIGINT NOT NULL,            -- 1 measured, 0 failed
    skipped           BIGINT NOT NULL,            -- 1: another test of the site was running
    bytes_per_second  DOUBLE PRECISION,           -- NULL unless up
    bytes_read        BIGINT,
    error             TEXT,
    PRIMARY KEY (report_id, network, target)
);
CREATE INDEX IF NOT EXISTS throughput_results_time ON throughput_results (effective_at);

-- Daily use of each network class per agent: bytes on the router port that carries it
-- (SNMP uplinks; polls whose bytes are unknown are counted, never guessed) and successful
-- application-level checks (http, dns) over it, the evidence where no counters exist.
CREATE TABLE IF NOT EXISTS network_use_daily (
    day            TEXT NOT NULL,  -- YYYY-MM-DD in the roll-up time zone
    site           TEXT NOT NULL,
    agent_id       TEXT NOT NULL,
    network        TEXT NOT NULL,
    in_bytes       BIGINT NOT NULL,
    out_bytes      BIGINT NOT NULL,
    counted_polls  BIGINT NOT NULL,  -- polls with known bytes
    unknown_polls  BIGINT NOT NULL,  -- first poll, reboot, counter reset, port missing
    app_checks_up  BIGINT NOT NULL,
    PRIMARY KEY (day, site, agent_id, network)
);
