-- hatang collector store, version 3: enrollment codes, enrolled agents, config status.
-- Portable SQL (SQLite and PostgreSQL), like 0001.

-- A per-agent credential is a row of `tokens` bound to one agent: reports sent with it
-- must carry this agent id. NULL for the site tokens of `token create`.
ALTER TABLE tokens ADD COLUMN agent_id TEXT;

-- Enrollment codes (`hatang-collector enroll-code create`). code_id is the code's first
-- group (the lookup key); code_hash is scrypt over the whole code (see collector/enroll.py).
CREATE TABLE enroll_codes (
    code_id     TEXT PRIMARY KEY,
    code_hash   TEXT NOT NULL,
    site        TEXT NOT NULL,
    max_uses    BIGINT NOT NULL,
    uses        BIGINT NOT NULL,
    failures    BIGINT NOT NULL,          -- wrong guesses at this code id
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,
    revoked_at  DOUBLE PRECISION,
    locked_at   DOUBLE PRECISION,         -- set when failures reached enroll.max_failures
    note        TEXT
);

-- One row per enrolled agent (agent ids are unique across the province).
CREATE TABLE enrolled_agents (
    agent_id       TEXT PRIMARY KEY,
    site           TEXT NOT NULL,
    token_id       TEXT NOT NULL,
    code_id        TEXT NOT NULL,
    hostname       TEXT NOT NULL,
    role           TEXT NOT NULL,
    agent_version  TEXT NOT NULL,
    enrolled_at    DOUBLE PRECISION NOT NULL,
    peer           TEXT
);
CREATE INDEX enrolled_agents_site ON enrolled_agents (site);

-- What each agent last said about the central configuration (POST /api/v1/config/status):
-- the version it runs and the error of the last version it rejected (NULL when none).
CREATE TABLE agent_config_status (
    site         TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    version      TEXT,
    error        TEXT,
    rejected     TEXT,                    -- the version it rejected
    reported_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (site, agent_id)
);
