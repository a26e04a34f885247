-- hatang collector store, version 5: declarations (facts no agent can observe).
-- A unit declares a value per reporting period and fact (collector/declarations.py: KEYS).
-- Nothing is overwritten: a changed value is a new revision of (unit, period, fact), and the
-- newest revision is the one in force; importing the same value again stores nothing.

CREATE TABLE declarations (
    unit          TEXT NOT NULL,
    period        TEXT NOT NULL,              -- canonical name: 2026, 2026-H1, security-2026
    fact          TEXT NOT NULL,              -- a key of collector/declarations.py: KEYS
    revision      BIGINT NOT NULL,            -- 1, 2, ... per (unit, period, fact)
    period_start  DOUBLE PRECISION NOT NULL,  -- unix seconds, as parsed when declared
    period_end    DOUBLE PRECISION NOT NULL,  -- first instant after the period
    value         TEXT NOT NULL,              -- canonical JSON of the value
    declared_by   TEXT NOT NULL,
    declared_at   DOUBLE PRECISION NOT NULL,
    source        TEXT NOT NULL,              -- where it came from: form file, sheet, row
    attachment_name    TEXT,
    attachment_sha256  TEXT,
    PRIMARY KEY (unit, period, fact, revision)
);
CREATE INDEX declarations_period ON declarations (period_start, period_end);

-- Attached files (a scanned decision, inspection minutes), stored once by content hash.
-- BYTEA is PostgreSQL's binary type; SQLite keeps bytes as a BLOB whatever the declared
-- type (a BLOB value is never converted), so one portable file serves both engines.
CREATE TABLE declaration_files (
    sha256     TEXT PRIMARY KEY,
    size       BIGINT NOT NULL,
    content    BYTEA NOT NULL,
    stored_at  DOUBLE PRECISION NOT NULL
);

-- For "unprotected since when": the last day each computer's antivirus was protected,
-- looked up only for computers that are unprotected now (few), so a year of history is
-- never scanned on a snapshot refresh.
CREATE INDEX host_daily_protected ON host_daily (site, agent_id, day)
    WHERE antivirus_state = 'protected';
